//! Every event type of the contract (DESIGN section 3), one struct each, and the
//! [`EventPayload`] enum that consumers match on.
//!
//! A type's identity is `io.imagelib.<aggregate>.<event>.v<N>`. Adding an optional field
//! keeps `vN`; anything a v`N` consumer would misread gets a new struct and `vN+1`, and
//! both stay decodable. [`EventPayload::decode`] is the one place where a type string
//! becomes a Rust type.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{DeploymentId, ImageId, RegistryId, RuleId, SubscriptionId, SyncId};
use crate::model::*;
use crate::oci::{Digest, RepositoryName, Tag};

/// The aggregates of the contract: the second token of every subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Aggregate {
    Registry,
    Rule,
    Sync,
    Image,
    Catalog,
    Deployment,
    Subscription,
}

impl Aggregate {
    pub const ALL: [Aggregate; 7] = [
        Aggregate::Registry,
        Aggregate::Rule,
        Aggregate::Sync,
        Aggregate::Image,
        Aggregate::Catalog,
        Aggregate::Deployment,
        Aggregate::Subscription,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Aggregate::Registry => "registry",
            Aggregate::Rule => "rule",
            Aggregate::Sync => "sync",
            Aggregate::Image => "image",
            Aggregate::Catalog => "catalog",
            Aggregate::Deployment => "deployment",
            Aggregate::Subscription => "subscription",
        }
    }
}

/// Implemented by every event data struct.
pub trait EventData:
    Serialize + for<'de> Deserialize<'de> + JsonSchema + Into<EventPayload>
{
    const AGGREGATE: Aggregate;
    /// The event's name within its aggregate: the last subject token.
    const NAME: &'static str;
    const VERSION: u32;
    /// The CloudEvent `type`.
    const TYPE: &'static str;

    /// The aggregate instance: the third subject token.
    fn aggregate_id(&self) -> Uuid;
    /// The CloudEvent `subject`: the human identity of what the event is about.
    fn subject(&self) -> String;
}

// ---------------------------------------------------------------- registry

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RegistryRegistered {
    pub registry_id: RegistryId,
    pub label: String,
    /// `host[:port][/namespace]`, without scheme.
    pub url: String,
    pub registry_type: RegistryType,
    /// Plain HTTP instead of HTTPS.
    pub insecure: bool,
    pub auth_kind: AuthKind,
    /// The credential, sealed; absent for `auth_kind: none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<SealedCredential>,
    /// Teams that see this registry; empty means every team.
    #[serde(default)]
    pub visibility: Vec<String>,
    /// A PEM CA bundle trusted for this registry in addition to the system roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_pem: Option<String>,
    /// Scan interval in seconds (the scanner's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_interval_secs: Option<u64>,
    /// Repositories to scan where the registry has no usable `_catalog`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub repositories: Vec<RepositoryName>,
    /// The secret registry webhooks authenticate with, sealed like the credential.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<SealedCredential>,
    /// Hosts besides the registry's own whose token realm may receive its credentials.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub auth_hosts: Vec<String>,
    /// Whether the registry's pull notifications are counted (`image.pulls_counted`);
    /// opt-in, as pulls are many and say who reads what.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub report_pulls: bool,
    /// The registry's own forward proxy (`http[s]://host[:port]`, never credentials);
    /// absent means the scanner's environment decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
    /// Hosts, `.suffixes`, addresses and CIDRs reached directly despite `proxy_url`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub no_proxy: Vec<String>,
    /// `gcr` only: the Artifact Registry repository the registry serves, as Google names
    /// it (`projects/{project}/locations/{location}/repositories/{repository}`), listed
    /// through the Artifact Registry API when `_catalog` is refused; absent means the
    /// location the URL names, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_registry: Option<String>,
}

/// A change of a registry's settings; absent fields are unchanged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RegistryUpdated {
    pub registry_id: RegistryId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub visibility: Option<Vec<String>>,
    /// `Some(None)` removes the custom CA.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    #[schemars(with = "Option<String>")]
    pub ca_pem: Option<Option<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scan_interval_secs: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repositories: Option<Vec<RepositoryName>>,
    /// Replaces the hosts whose token realm may receive the credentials.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_hosts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry_type: Option<RegistryType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_pulls: Option<bool>,
    /// New credentials that come with a move (`url`, `insecure`, `registry_type` or new
    /// `auth_hosts`), in the same event so the old ones never meet the new settings:
    /// when present, `credential` replaces the stored one (absent for `none`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_kind: Option<AuthKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<SealedCredential>,
    /// `Some(None)` removes the registry's proxy.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    #[schemars(with = "Option<String>")]
    pub proxy_url: Option<Option<String>>,
    /// Replaces the hosts reached directly despite the proxy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_proxy: Option<Vec<String>>,
    /// `Some(None)` removes the registry's Artifact Registry repository (the URL's
    /// location is used again).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "double_option"
    )]
    #[schemars(with = "Option<String>")]
    pub artifact_registry: Option<Option<String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RegistryCredentialsRotated {
    pub registry_id: RegistryId,
    pub auth_kind: AuthKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<SealedCredential>,
    /// A new webhook secret, when the registry's data key had to be replaced (the old one
    /// could not be opened): the old webhook secret is dead with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<SealedCredential>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RegistryValidated {
    pub registry_id: RegistryId,
    /// The auth scheme the registry challenged with (`basic`, `bearer`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth_scheme: Option<String>,
    /// Whether `_catalog` answered with the credentials given.
    pub catalog_access: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RegistryValidationFailed {
    pub registry_id: RegistryId,
    pub reason: ValidationReason,
    /// A human explanation, never containing a secret.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RegistryRemoved {
    pub registry_id: RegistryId,
}

// ---------------------------------------------------------------- rule

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RuleSet {
    pub registry_id: RegistryId,
    pub rule_id: RuleId,
    pub repositories: Vec<RepositoryPattern>,
    #[serde(default)]
    pub tags: TagSelector,
    pub kind: RuleKind,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub hm_tags: Vec<HmTag>,
    pub enabled: bool,
    /// The trust policy of the images this rule selects (issue 13).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<TrustPolicy>,
    /// The retention policy previewed by `GET /v1/lifecycle/preview` (issue 14); imagelib
    /// never deletes anything from a registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<RetentionPolicy>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RuleRemoved {
    pub registry_id: RegistryId,
    pub rule_id: RuleId,
}

// ---------------------------------------------------------------- sync

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SyncRequested {
    pub registry_id: RegistryId,
    /// Only this repository (a webhook push); the whole registry when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepositoryName>,
    pub reason: SyncReason,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SyncStarted {
    pub registry_id: RegistryId,
    pub sync_id: SyncId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepositoryName>,
    pub reason: SyncReason,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SyncCompleted {
    pub registry_id: RegistryId,
    pub sync_id: SyncId,
    /// Repositories scanned.
    pub repositories: u64,
    pub tags_seen: u64,
    pub added: u64,
    pub moved: u64,
    pub removed: u64,
    /// HTTP requests made to the registry.
    pub requests: u64,
    pub duration_ms: u64,
    /// Not everything could be listed: nothing unseen was removed.
    #[serde(default)]
    pub partial: bool,
    /// Repositories deferred to the next cycle after a `429`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limited: Vec<RepositoryName>,
    /// Why the scan is `partial`: each repository (or the `_catalog` listing, without a
    /// repository) whose scan ended early, with the reason. At most
    /// [`SyncCompleted::MAX_INCOMPLETE`] entries; `incomplete_more` counts the rest.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<IncompleteScan>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub incomplete_more: u64,
}

impl SyncCompleted {
    /// The most `incomplete` entries one event carries.
    pub const MAX_INCOMPLETE: usize = 100;
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SyncFailed {
    pub registry_id: RegistryId,
    pub sync_id: SyncId,
    pub reason: String,
}

// ---------------------------------------------------------------- image

// `Deserialize` is written by hand (`crate::flatten`): the details are read in one pass.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct TagDiscovered {
    pub registry_id: RegistryId,
    pub repository: RepositoryName,
    pub tag: Tag,
    pub digest: Digest,
    #[serde(flatten)]
    pub details: ImageDetails,
}

// `Deserialize` is written by hand (`crate::flatten`): the details are read in one pass.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct TagMoved {
    pub registry_id: RegistryId,
    pub repository: RepositoryName,
    pub tag: Tag,
    pub old_digest: Digest,
    pub new_digest: Digest,
    /// What the new digest is.
    #[serde(flatten)]
    pub details: ImageDetails,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TagRemoved {
    pub registry_id: RegistryId,
    pub repository: RepositoryName,
    pub tag: Tag,
    /// The digest the tag pointed at when last seen.
    pub digest: Digest,
}

// ---------------------------------------------------------------- image: trust and integrity

/// A signature referrer of `digest` verified against the trust policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SignatureVerified {
    pub registry_id: RegistryId,
    pub repository: RepositoryName,
    pub digest: Digest,
    /// The signer's identity (keyless: the certificate subject) or the key id.
    pub signer: String,
    /// The OIDC issuer of a keyless signer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    pub kind: SignatureKind,
    /// The policy rule that admitted the signer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<RuleId>,
    /// The digest of the signature referrer.
    pub source: Digest,
}

/// A signature referrer of `digest` failed verification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SignatureFailed {
    pub registry_id: RegistryId,
    pub repository: RepositoryName,
    pub digest: Digest,
    /// The claimed identity or key id, as far as it could be read.
    pub signer: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuer: Option<String>,
    pub kind: SignatureKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<RuleId>,
    pub reason: String,
    /// The digest of the signature referrer.
    pub source: Digest,
}

/// A vulnerability report referrer of `digest`, summarised: the findings stay in the
/// registry, the event carries counts so a consumer can apply a severity limit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct VulnerabilitiesReported {
    pub registry_id: RegistryId,
    pub repository: RepositoryName,
    pub digest: Digest,
    pub scanner: ScannerInfo,
    /// The vulnerability database version the scanner used.
    pub db: String,
    pub scanned_at: DateTime<Utc>,
    pub counts: SeverityCounts,
    /// Findings with a fixed version available.
    pub fixable: u64,
    /// The digest of the report referrer; for another origin, the sha256 of the canonical
    /// JSON of what was read (the same report read again is the same source).
    pub source: Digest,
    /// Where the report came from; absent means a report referrer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<ReportOrigin>,
}

/// The source of a vulnerability report other than a referrer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReportOrigin {
    /// A report referrer attached to the digest (what an absent origin means).
    Referrer,
    /// Harbor's own scan of the artifact (`scan_overview` of its artifacts API).
    HarborScanOverview,
}

/// An SBOM referrer of `digest` was found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SbomFound {
    pub registry_id: RegistryId,
    pub repository: RepositoryName,
    pub digest: Digest,
    pub format: SbomFormat,
    /// The digest of the SBOM referrer.
    pub source: Digest,
}

/// The trust policy was evaluated for `digest`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyEvaluated {
    pub registry_id: RegistryId,
    pub repository: RepositoryName,
    pub digest: Digest,
    pub verdict: PolicyVerdict,
    /// Why it is not `pass`; each reason at most once, so at most
    /// [`PolicyReason::ALL`]`.len()` entries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<PolicyReason>,
    /// The rule whose policy was applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<RuleId>,
    /// Each reason with what was seen, in the order of `reasons`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<PolicyFinding>,
}

/// The referrers of `digest` as last listed: emitted when the list differs from the one
/// last emitted or carried by the tag event (a signature or report attached after the push).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct ReferrersChanged {
    pub registry_id: RegistryId,
    pub repository: RepositoryName,
    pub digest: Digest,
    pub referrers: Vec<Referrer>,
}

/// A tag that policy treats as immutable now points at another digest (issue 14).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TagMutated {
    pub registry_id: RegistryId,
    pub repository: RepositoryName,
    pub tag: Tag,
    pub old_digest: Digest,
    pub new_digest: Digest,
    pub found_by: MutationFoundBy,
    /// When the new digest was seen under the tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seen_at: Option<DateTime<Utc>>,
}

/// Pulls of one digest (under one tag, when the registry said which) counted over a window:
/// pull notifications are aggregated, never one event per pull.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PullsCounted {
    pub registry_id: RegistryId,
    pub repository: RepositoryName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<Tag>,
    pub digest: Digest,
    /// Pulls in the window (at least one).
    pub pulls: u64,
    pub first_pulled_at: DateTime<Utc>,
    pub last_pulled_at: DateTime<Utc>,
}

// ---------------------------------------------------------------- catalog

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CatalogLabeled {
    pub target: CatalogTarget,
    pub hm_tag: HmTag,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CatalogUnlabeled {
    pub target: CatalogTarget,
    pub hm_tag: HmTag,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CatalogReadmeSet {
    pub target: CatalogTarget,
    /// Markdown.
    pub readme: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CatalogApproved {
    pub target: CatalogTarget,
    /// The digest approved, when the target is a tag: a later move is not approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    #[serde(default)]
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CatalogRejected {
    pub target: CatalogTarget,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    pub reason: String,
}

// ---------------------------------------------------------------- deployment

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentRequested {
    pub deployment_id: DeploymentId,
    pub image: ImageRef,
    /// The digest the tag resolved to when requested: the manifests pin it.
    pub digest: Digest,
    #[serde(default)]
    pub workload: WorkloadKind,
    pub name: KubeName,
    pub namespace: KubeName,
    pub replicas: u32,
    #[serde(default)]
    pub resources: Resources,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub target: DeploymentTarget,
    /// Workload-specific settings (e.g. CNPG `instances`, `storage`).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub options: serde_json::Map<String, serde_json::Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentRendered {
    pub deployment_id: DeploymentId,
    pub manifests: Vec<ManifestRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentApplied {
    pub deployment_id: DeploymentId,
    pub target: DeploymentTarget,
    /// The git commit (gitops) or the resource version (kubernetes).
    pub revision: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentFailed {
    pub deployment_id: DeploymentId,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentDeleted {
    pub deployment_id: DeploymentId,
    /// The git commit (gitops) that removed the manifests, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
}

/// A deployment was refused (or, under an audit policy, flagged) because its digest does not
/// satisfy the trust policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DeploymentPolicyViolated {
    pub deployment_id: DeploymentId,
    pub digest: Digest,
    /// Each reason at most once.
    pub reasons: Vec<PolicyReason>,
    pub stage: ViolationStage,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<RuleId>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub findings: Vec<PolicyFinding>,
}

mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize>(
        v: &Option<Option<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match v {
            Some(inner) => inner.serialize(s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

// ---------------------------------------------------------------- the catalogue of types

// ---------------------------------------------------------------- subscription

/// An outbound subscription: matching events are delivered to `url` as CloudEvents over
/// HTTP (structured mode), signed with the secret.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SubscriptionCreated {
    pub subscription_id: SubscriptionId,
    /// An `https://` URL (`http://` only where the deployment allows it).
    pub url: String,
    /// CloudEvent type patterns (`io.imagelib.image.*`, `*.tag_mutated.v1`); `*` matches
    /// any run of characters.
    pub types: Vec<String>,
    /// The signing secret, sealed like a registry credential.
    pub secret: SealedCredential,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SubscriptionRemoved {
    pub subscription_id: SubscriptionId,
}

/// Deliver again the matching events appended in [`from`, `to`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SubscriptionReplayRequested {
    pub subscription_id: SubscriptionId,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

fn registry_subject(id: RegistryId) -> String {
    format!("registry/{id}")
}

fn image_subject(registry: RegistryId, repository: &RepositoryName, tag: &Tag) -> String {
    format!("{registry}/{repository}:{tag}")
}

fn digest_subject(registry: RegistryId, repository: &RepositoryName, digest: &Digest) -> String {
    format!("{registry}/{repository}@{digest}")
}

fn deployment_subject(id: DeploymentId) -> String {
    format!("deployment/{id}")
}

fn subscription_subject(id: SubscriptionId) -> String {
    format!("subscription/{id}")
}

macro_rules! events {
    ($(
        $variant:ident => $agg:ident, $name:literal, $ver:literal,
            id: |$i:ident| $id:expr, subject: |$s:ident| $subject:expr;
    )*) => {
        $(
            impl EventData for $variant {
                const AGGREGATE: Aggregate = Aggregate::$agg;
                const NAME: &'static str = $name;
                const VERSION: u32 = $ver;
                const TYPE: &'static str = concat!(
                    "io.imagelib.", events!(@agg $agg), ".", $name, ".v", stringify!($ver)
                );

                fn aggregate_id(&self) -> Uuid {
                    let $i = self;
                    $id
                }

                fn subject(&self) -> String {
                    let $s = self;
                    $subject
                }
            }

            impl From<$variant> for EventPayload {
                fn from(e: $variant) -> Self {
                    EventPayload::$variant(e)
                }
            }
        )*

        /// Any event of the contract.
        #[derive(Debug, Clone, PartialEq)]
        pub enum EventPayload {
            $( $variant($variant), )*
        }

        impl EventPayload {
            /// Every event type, for schema generation and documentation.
            pub const TYPES: &'static [EventType] = &[
                $( EventType {
                    type_name: <$variant as EventData>::TYPE,
                    aggregate: Aggregate::$agg,
                    name: $name,
                    version: $ver,
                    rust_name: stringify!($variant),
                    schema: || schemars::schema_for!($variant),
                }, )*
            ];

            pub fn event_type(&self) -> &'static str {
                match self { $( EventPayload::$variant(_) => <$variant as EventData>::TYPE, )* }
            }

            pub fn aggregate(&self) -> Aggregate {
                match self { $( EventPayload::$variant(_) => Aggregate::$agg, )* }
            }

            pub fn name(&self) -> &'static str {
                match self { $( EventPayload::$variant(_) => $name, )* }
            }

            pub fn aggregate_id(&self) -> Uuid {
                match self { $( EventPayload::$variant(e) => e.aggregate_id(), )* }
            }

            pub fn subject(&self) -> String {
                match self { $( EventPayload::$variant(e) => e.subject(), )* }
            }

            pub fn to_json(&self) -> serde_json::Value {
                let v = match self { $( EventPayload::$variant(e) => serde_json::to_value(e), )* };
                // Serialising these plain data structs cannot fail: no maps with non-string
                // keys, no custom serialisers that error.
                v.unwrap_or(serde_json::Value::Null)
            }

            /// Decode `data` as the event type `type_name`.
            /// [`EventPayload::decode`] straight from the JSON text of the data, with no
            /// `serde_json::Value` in between (what a consumer spends per event). `Err(Ok)`
            /// when the text is not JSON at all.
            pub fn decode_slice(
                type_name: &str,
                data: &[u8],
            ) -> Result<Self, Result<serde_json::Error, PayloadError>> {
                fn data_error(type_name: &str, e: serde_json::Error) -> Result<serde_json::Error, PayloadError> {
                    match e.classify() {
                        serde_json::error::Category::Data => Err(PayloadError::Data {
                            type_name: type_name.to_owned(),
                            message: e.to_string(),
                        }),
                        _ => Ok(e),
                    }
                }
                match type_name {
                    $( <$variant as EventData>::TYPE => serde_json::from_slice::<$variant>(data)
                        .map(EventPayload::$variant)
                        .map_err(|e| data_error(type_name, e)), )*
                    other => Err(Err(PayloadError::UnknownType(other.to_owned()))),
                }
            }

            pub fn decode(type_name: &str, data: serde_json::Value) -> Result<Self, PayloadError> {
                match type_name {
                    $( <$variant as EventData>::TYPE => serde_json::from_value::<$variant>(data)
                        .map(EventPayload::$variant)
                        .map_err(|e| PayloadError::Data { type_name: type_name.to_owned(), message: e.to_string() }), )*
                    other => Err(PayloadError::UnknownType(other.to_owned())),
                }
            }
        }
    };
    (@agg Registry) => { "registry" };
    (@agg Rule) => { "rule" };
    (@agg Sync) => { "sync" };
    (@agg Image) => { "image" };
    (@agg Catalog) => { "catalog" };
    (@agg Deployment) => { "deployment" };
    (@agg Subscription) => { "subscription" };
}

/// Describes one event type of the contract.
#[derive(Debug, Clone, Copy)]
pub struct EventType {
    pub type_name: &'static str,
    pub aggregate: Aggregate,
    pub name: &'static str,
    pub version: u32,
    pub rust_name: &'static str,
    pub schema: fn() -> schemars::Schema,
}

/// An event's data does not fit its declared type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("unknown event type `{0}`")]
    UnknownType(String),
    #[error("data of `{type_name}` does not match its schema: {message}")]
    Data { type_name: String, message: String },
}

events! {
    RegistryRegistered => Registry, "registered", 1,
        id: |e| e.registry_id.0, subject: |e| registry_subject(e.registry_id);
    RegistryUpdated => Registry, "updated", 1,
        id: |e| e.registry_id.0, subject: |e| registry_subject(e.registry_id);
    RegistryCredentialsRotated => Registry, "credentials_rotated", 1,
        id: |e| e.registry_id.0, subject: |e| registry_subject(e.registry_id);
    RegistryValidated => Registry, "validated", 1,
        id: |e| e.registry_id.0, subject: |e| registry_subject(e.registry_id);
    RegistryValidationFailed => Registry, "validation_failed", 1,
        id: |e| e.registry_id.0, subject: |e| registry_subject(e.registry_id);
    RegistryRemoved => Registry, "removed", 1,
        id: |e| e.registry_id.0, subject: |e| registry_subject(e.registry_id);

    RuleSet => Rule, "set", 1,
        id: |e| e.registry_id.0, subject: |e| format!("registry/{}/rules/{}", e.registry_id, e.rule_id);
    RuleRemoved => Rule, "removed", 1,
        id: |e| e.registry_id.0, subject: |e| format!("registry/{}/rules/{}", e.registry_id, e.rule_id);

    SyncRequested => Sync, "requested", 1,
        id: |e| e.registry_id.0, subject: |e| registry_subject(e.registry_id);
    SyncStarted => Sync, "started", 1,
        id: |e| e.registry_id.0, subject: |e| registry_subject(e.registry_id);
    SyncCompleted => Sync, "completed", 1,
        id: |e| e.registry_id.0, subject: |e| registry_subject(e.registry_id);
    SyncFailed => Sync, "failed", 1,
        id: |e| e.registry_id.0, subject: |e| registry_subject(e.registry_id);

    TagDiscovered => Image, "tag_discovered", 1,
        id: |e| ImageId::derive(e.registry_id, &e.repository).0,
        subject: |e| image_subject(e.registry_id, &e.repository, &e.tag);
    TagMoved => Image, "tag_moved", 1,
        id: |e| ImageId::derive(e.registry_id, &e.repository).0,
        subject: |e| image_subject(e.registry_id, &e.repository, &e.tag);
    TagRemoved => Image, "tag_removed", 1,
        id: |e| ImageId::derive(e.registry_id, &e.repository).0,
        subject: |e| image_subject(e.registry_id, &e.repository, &e.tag);

    SignatureVerified => Image, "signature_verified", 1,
        id: |e| ImageId::derive(e.registry_id, &e.repository).0,
        subject: |e| digest_subject(e.registry_id, &e.repository, &e.digest);
    SignatureFailed => Image, "signature_failed", 1,
        id: |e| ImageId::derive(e.registry_id, &e.repository).0,
        subject: |e| digest_subject(e.registry_id, &e.repository, &e.digest);
    VulnerabilitiesReported => Image, "vulnerabilities_reported", 1,
        id: |e| ImageId::derive(e.registry_id, &e.repository).0,
        subject: |e| digest_subject(e.registry_id, &e.repository, &e.digest);
    SbomFound => Image, "sbom_found", 1,
        id: |e| ImageId::derive(e.registry_id, &e.repository).0,
        subject: |e| digest_subject(e.registry_id, &e.repository, &e.digest);
    PolicyEvaluated => Image, "policy_evaluated", 1,
        id: |e| ImageId::derive(e.registry_id, &e.repository).0,
        subject: |e| digest_subject(e.registry_id, &e.repository, &e.digest);
    ReferrersChanged => Image, "referrers_changed", 1,
        id: |e| ImageId::derive(e.registry_id, &e.repository).0,
        subject: |e| digest_subject(e.registry_id, &e.repository, &e.digest);
    TagMutated => Image, "tag_mutated", 1,
        id: |e| ImageId::derive(e.registry_id, &e.repository).0,
        subject: |e| image_subject(e.registry_id, &e.repository, &e.tag);
    PullsCounted => Image, "pulls_counted", 1,
        id: |e| ImageId::derive(e.registry_id, &e.repository).0,
        subject: |e| digest_subject(e.registry_id, &e.repository, &e.digest);

    CatalogLabeled => Catalog, "labeled", 1,
        id: |e| ImageId::derive(e.target.registry_id, &e.target.repository).0,
        subject: |e| e.target.to_string();
    CatalogUnlabeled => Catalog, "unlabeled", 1,
        id: |e| ImageId::derive(e.target.registry_id, &e.target.repository).0,
        subject: |e| e.target.to_string();
    CatalogReadmeSet => Catalog, "readme_set", 1,
        id: |e| ImageId::derive(e.target.registry_id, &e.target.repository).0,
        subject: |e| e.target.to_string();
    CatalogApproved => Catalog, "approved", 1,
        id: |e| ImageId::derive(e.target.registry_id, &e.target.repository).0,
        subject: |e| e.target.to_string();
    CatalogRejected => Catalog, "rejected", 1,
        id: |e| ImageId::derive(e.target.registry_id, &e.target.repository).0,
        subject: |e| e.target.to_string();

    DeploymentRequested => Deployment, "requested", 1,
        id: |e| e.deployment_id.0, subject: |e| deployment_subject(e.deployment_id);
    DeploymentRendered => Deployment, "rendered", 1,
        id: |e| e.deployment_id.0, subject: |e| deployment_subject(e.deployment_id);
    DeploymentApplied => Deployment, "applied", 1,
        id: |e| e.deployment_id.0, subject: |e| deployment_subject(e.deployment_id);
    DeploymentFailed => Deployment, "failed", 1,
        id: |e| e.deployment_id.0, subject: |e| deployment_subject(e.deployment_id);
    DeploymentDeleted => Deployment, "deleted", 1,
        id: |e| e.deployment_id.0, subject: |e| deployment_subject(e.deployment_id);
    DeploymentPolicyViolated => Deployment, "policy_violated", 1,
        id: |e| e.deployment_id.0, subject: |e| deployment_subject(e.deployment_id);

    SubscriptionCreated => Subscription, "created", 1,
        id: |e| e.subscription_id.0, subject: |e| subscription_subject(e.subscription_id);
    SubscriptionRemoved => Subscription, "removed", 1,
        id: |e| e.subscription_id.0, subject: |e| subscription_subject(e.subscription_id);
    SubscriptionReplayRequested => Subscription, "replay_requested", 1,
        id: |e| e.subscription_id.0, subject: |e| subscription_subject(e.subscription_id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_names_follow_the_contract() {
        assert_eq!(
            RegistryRegistered::TYPE,
            "io.imagelib.registry.registered.v1"
        );
        assert_eq!(TagDiscovered::TYPE, "io.imagelib.image.tag_discovered.v1");
        assert_eq!(DeploymentDeleted::TYPE, "io.imagelib.deployment.deleted.v1");
        let mut names: Vec<_> = EventPayload::TYPES.iter().map(|t| t.type_name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            EventPayload::TYPES.len(),
            "type names are unique"
        );
        assert_eq!(EventPayload::TYPES.len(), 37);
    }

    #[test]
    fn trust_events_share_the_image_stream_and_name_the_digest() {
        let registry_id = RegistryId(Uuid::from_u128(7));
        let repository: RepositoryName = "team/app".parse().unwrap();
        let digest: Digest = format!("sha256:{}", "a".repeat(64)).parse().unwrap();
        let verified = SignatureVerified {
            registry_id,
            repository: repository.clone(),
            digest: digest.clone(),
            signer: "key-1".into(),
            issuer: None,
            kind: SignatureKind::Notation,
            policy: None,
            source: digest.clone(),
        };
        assert_eq!(
            verified.aggregate_id(),
            ImageId::derive(registry_id, &repository).0,
            "ordered with the tag events of the same repository"
        );
        assert_eq!(
            verified.subject(),
            format!("{registry_id}/team/app@{digest}")
        );
        assert_eq!(
            SignatureVerified::TYPE,
            "io.imagelib.image.signature_verified.v1"
        );
        assert_eq!(
            DeploymentPolicyViolated::TYPE,
            "io.imagelib.deployment.policy_violated.v1"
        );
        let evaluated = EventPayload::decode(
            PolicyEvaluated::TYPE,
            serde_json::json!({"registry_id": registry_id, "repository": "team/app",
                "digest": digest, "verdict": "fail", "reasons": ["no_sbom", "signer_not_trusted"]}),
        )
        .unwrap();
        let EventPayload::PolicyEvaluated(e) = evaluated else {
            panic!("decoded as another type")
        };
        assert_eq!(
            e.reasons,
            [PolicyReason::NoSbom, PolicyReason::SignerNotTrusted]
        );
        assert!(matches!(
            EventPayload::decode(
                PolicyEvaluated::TYPE,
                serde_json::json!({"registry_id": registry_id, "repository": "team/app",
                    "digest": digest, "verdict": "fail", "reasons": ["looks_bad"]}),
            ),
            Err(PayloadError::Data { .. })
        ));
    }

    #[test]
    fn unknown_types_and_bad_data_are_errors() {
        assert!(matches!(
            EventPayload::decode("io.imagelib.nope.v1", serde_json::json!({})),
            Err(PayloadError::UnknownType(_))
        ));
        assert!(matches!(
            EventPayload::decode(RegistryRemoved::TYPE, serde_json::json!({"registry_id": 3})),
            Err(PayloadError::Data { .. })
        ));
    }
}
