//! Value types that event data is made of.
//!
//! They are the vocabulary of the contract, shared by every service: a registry's type, an
//! image's kind, a rule's selectors. Enums serialise as the lower-case words clients
//! already use in the HTTP API.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::ids::RegistryId;
use crate::oci::{Digest, RepositoryName, Tag};

/// Which kind of registry a URL points at; picks the auth flow and quirks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RegistryType {
    /// Any Docker Registry HTTP API v2 / OCI distribution registry.
    Generic,
    Harbor,
    Dockerhub,
    Ghcr,
    Ecr,
    Acr,
    /// Google Artifact Registry (and the legacy Container Registry).
    Gcr,
}

/// How imagelib authenticates to a registry. Never carries the secret itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthKind {
    None,
    /// Username and password (also Harbor robot accounts, ACR admin user, GAR `_json_key`).
    Basic,
    /// A bearer/identity token (also GAR `oauth2accesstoken`).
    Token,
    /// AWS access key and region, exchanged through ECR `GetAuthorizationToken`.
    AwsEcr,
    /// An Azure service principal, exchanged at the registry's `/oauth2/exchange`.
    AzureServicePrincipal,
    /// A Google service account key, exchanged for access tokens (JWT bearer grant).
    GcpServiceAccount,
    /// GKE workload identity: access tokens from the metadata server; nothing stored.
    GcpWorkloadIdentity,
    /// AWS IRSA (`AssumeRoleWithWebIdentity`) or EKS Pod Identity, then ECR; no static key.
    AwsWebIdentity,
    /// Azure workload identity: the federated token as an AAD client assertion, then ACR.
    AzureWorkloadIdentity,
    /// A GitHub App installation: the app's JWT exchanged for installation tokens (ghcr).
    GithubApp,
}

/// A credential sealed with envelope encryption: the plaintext is only ever recoverable
/// with the registry's data key, which removal destroys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct SealedCredential {
    /// The id of the data key that sealed it.
    pub key_id: String,
    /// The AEAD algorithm, e.g. `AES-256-GCM`.
    pub algorithm: String,
    /// Base64 nonce.
    pub nonce: String,
    /// Base64 ciphertext with its tag.
    pub ciphertext: String,
}

/// Why a registry could not be validated. The words are part of the HTTP contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ValidationReason {
    Dns,
    Tls,
    Connect,
    Timeout,
    NotARegistry,
    Unauthorized,
    Forbidden,
    RateLimited,
    /// Refused by the network guard (link-local, metadata or a denied network).
    Blocked,
    /// The registry's token realm is on a host its credentials may not go to (neither the
    /// registry's own host, nor one of its `auth_hosts`, nor a known token host).
    RealmNotAllowed,
    /// The credentials are for a cloud exchange (ACR, ECR) and the registry's host is not
    /// one of that cloud's registry hosts: nothing is exchanged.
    HostNotAllowed,
    /// The registry's sealed credentials cannot be opened with the master keys at hand.
    CredentialsUnavailable,
}

/// What a rule says an image is. `auto` infers it from annotations, labels and artifact type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum RuleKind {
    Database,
    Model,
    #[default]
    Auto,
}

/// What an image is, once classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum ImageKind {
    Database,
    Model,
    #[default]
    Other,
}

impl ImageKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageKind::Database => "database",
            ImageKind::Model => "model",
            ImageKind::Other => "other",
        }
    }
}

/// The Model Library's model types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum ModelType {
    TextCompletion,
    TextEmbedding,
    ImageEmbedding,
    Ocr,
    Reranker,
}

impl ModelType {
    pub const ALL: [ModelType; 5] = [
        ModelType::TextCompletion,
        ModelType::TextEmbedding,
        ModelType::ImageEmbedding,
        ModelType::Ocr,
        ModelType::Reranker,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ModelType::TextCompletion => "text-completion",
            ModelType::TextEmbedding => "text-embedding",
            ModelType::ImageEmbedding => "image-embedding",
            ModelType::Ocr => "ocr",
            ModelType::Reranker => "reranker",
        }
    }
}

impl FromStr for ModelType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ModelType::ALL
            .into_iter()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown model type `{s}`; expected one of text-completion, text-embedding, \
                     image-embedding, ocr, reranker"
                )
            })
    }
}

impl fmt::Display for ModelType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One platform of a (possibly multi-arch) image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    /// The platform-specific manifest digest (for an index entry).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

/// A PostgreSQL extension an image declares (annotation/label
/// `io.imagelib.postgres.extensions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PostgresExtension {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// What an OCI 1.1 referrer (or `sha256-<hex>.sig` tag) attached to an image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReferrerKind {
    Signature,
    Sbom,
    Attestation,
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Referrer {
    pub digest: Digest,
    pub kind: ReferrerKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

/// What the scanner learnt about the manifest a tag points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImageDetails {
    pub media_type: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(default)]
    pub platforms: Vec<Platform>,
    /// Total size in bytes: manifest, config and layers (of every platform for an index).
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<DateTime<Utc>>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
    pub kind: ImageKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model_type: Option<ModelType>,
    #[serde(default)]
    pub extensions: Vec<PostgresExtension>,
    #[serde(default)]
    pub referrers: Vec<Referrer>,
}

/// How a rule selects repositories.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum RepositoryPattern {
    /// One repository by name; also how registries without `_catalog` are listed.
    Exact(RepositoryName),
    /// A glob: `*` within a path component, `**` across components, `?` one character.
    Glob(String),
    /// A regular expression, matched against the whole name.
    Regex(String),
}

/// How a rule matches a tag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TagPattern {
    Exact(Tag),
    Prefix(String),
    Regex(String),
    /// A semver requirement such as `>=16, <18`; tags that are not versions never match.
    Semver(String),
}

/// Which tags of the selected repositories a rule discovers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub struct TagSelector {
    /// A tag is taken if it matches any of these (all tags when empty).
    #[serde(default)]
    pub include: Vec<TagPattern>,
    /// A tag is dropped if it matches any of these (after include).
    #[serde(default)]
    pub exclude: Vec<TagPattern>,
    /// Keep only the newest N of the remaining tags (by version, then by name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub newest: Option<u32>,
    /// Tags that can move (float) and are re-checked by HEAD on every scan. `None` means
    /// the default: `latest`, `stable`, `main` and tags without a version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mutable: Option<Vec<TagPattern>>,
    /// Tags that must never move: re-checked by HEAD on a push webhook for the repository
    /// and by the rolling integrity sweep; a move is an `image.tag_mutated`. `None` means
    /// the default: semantic-version tags (`1.2.3`, `v1.2`, `16.4-bookworm`). A tag that
    /// floats is never immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<Vec<TagPattern>>,
    /// Whether the signature/attestation/SBOM tags (`.sig`, `.att`, `.sbom`) are dropped.
    #[serde(default = "default_true")]
    pub exclude_artifact_tags: bool,
}

fn default_true() -> bool {
    true
}

/// What triggered a sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SyncReason {
    Schedule,
    Manual,
    Webhook,
}

/// A repository whose scan ended early (`sync.completed` is then `partial`): nothing of it
/// that the scan did not see was removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct IncompleteScan {
    /// The repository; absent for the registry's `_catalog` listing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<RepositoryName>,
    pub reason: IncompleteReason,
}

/// Why a repository's scan ended early. The caps are the scanner's configuration
/// (`IMAGELIB_SCANNER__MAX_*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum IncompleteReason {
    /// More tags than `max_tags` per repository.
    TooManyTags,
    /// More pages than `max_pages` per listing (or a pagination loop).
    TooManyPages,
    /// A listing larger than `max_listing_bytes` in total, or one page larger than the cap.
    ListingTooLarge,
    /// A manifest larger than `max_manifest_bytes`.
    ManifestTooLarge,
    /// An index with more children than `max_index_children`.
    TooManyIndexChildren,
    /// A config blob larger than `max_config_bytes`.
    ConfigTooLarge,
    /// A `429` (or `503`) with a `Retry-After` beyond the cap: deferred to the next scan.
    RateLimited,
    /// `tags/list` answered `404` where the repository was known: its tags are removed
    /// only when the next scan sees it missing again, or a complete `_catalog` agrees.
    Missing,
    /// The registry's answer broke the protocol (bad JSON, a link off the registry, a
    /// digest mismatch, …).
    Protocol,
    /// The request budget of the scan is spent.
    BudgetExhausted,
    /// The scan ran out of time.
    Timeout,
    /// Any other failure (connection, 5xx after retries, refused credentials).
    Error,
}

/// A curator's organisational label (`approved-production`, `gpu`). Never written to a
/// registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct HmTag(#[schemars(regex(pattern = r"^[a-z0-9][a-z0-9._:-]{0,62}$"))] String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "HM tag `{0}` is not valid: use 1 to 63 characters of `a-z`, `0-9`, `.`, `_`, `:` and `-`, starting with a letter or digit"
)]
pub struct HmTagError(pub String);

impl HmTag {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The label curators put on images cleared for production.
    pub fn approved_production() -> Self {
        Self("approved-production".to_owned())
    }
}

impl FromStr for HmTag {
    type Err = HmTagError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let ok = !b.is_empty()
            && b.len() <= 63
            && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
            && b.iter().all(|&c| {
                c.is_ascii_lowercase()
                    || c.is_ascii_digit()
                    || matches!(c, b'.' | b'_' | b':' | b'-')
            });
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(HmTagError(s.to_owned()))
        }
    }
}

impl<'de> Deserialize<'de> for HmTag {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for HmTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a catalog command is about: a whole repository, or one tag of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CatalogTarget {
    pub registry_id: RegistryId,
    pub repository: RepositoryName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<Tag>,
}

impl fmt::Display for CatalogTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry_id, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        Ok(())
    }
}

/// A tag of an image in a registry: `<registry-id>/<repository>:<tag>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImageRef {
    pub registry_id: RegistryId,
    pub repository: RepositoryName,
    pub tag: Tag,
}

impl fmt::Display for ImageRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.registry_id, self.repository, self.tag)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("image reference `{0}` is not `<registry-id>/<repository>:<tag>`")]
pub struct ImageRefError(pub String);

impl FromStr for ImageRef {
    type Err = ImageRefError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ImageRefError(s.to_owned());
        let (registry, rest) = s.split_once('/').ok_or_else(err)?;
        let (repository, tag) = rest.rsplit_once(':').ok_or_else(err)?;
        Ok(ImageRef {
            registry_id: registry.parse().map_err(|_| err())?,
            repository: repository.parse().map_err(|_| err())?,
            tag: tag.parse().map_err(|_| err())?,
        })
    }
}

/// A Kubernetes object name or namespace (RFC 1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`,
/// at most 63 characters).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct KubeName(#[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"))] String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{0}` is not a valid Kubernetes name: 1 to 63 lower-case letters, digits and `-`, starting and ending with a letter or digit"
)]
pub struct KubeNameError(pub String);

impl KubeName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for KubeName {
    type Err = KubeNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let b = s.as_bytes();
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        let ok = !b.is_empty()
            && b.len() <= 63
            && alnum(b[0])
            && alnum(b[b.len() - 1])
            && b.iter().all(|&c| alnum(c) || c == b'-');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(KubeNameError(s.to_owned()))
        }
    }
}

impl<'de> Deserialize<'de> for KubeName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for KubeName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Kubernetes resource requests and limits (`cpu`, `memory`, `nvidia.com/gpu`, …).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema, Default)]
pub struct Resources {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub requests: BTreeMap<String, serde_json::Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, serde_json::Value>,
}

/// Where rendered manifests go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum DeploymentTarget {
    #[default]
    Gitops,
    Kubernetes,
}

/// What a deployment renders to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum WorkloadKind {
    /// A KServe `InferenceService` for a model image.
    #[default]
    InferenceService,
    /// A CloudNativePG `Cluster` for a database image.
    PostgresCluster,
}

/// One manifest a deployment rendered, identified without its (possibly large) body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ManifestRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The sha256 of the rendered YAML, so a redeploy of the same spec is recognised.
    pub sha256: String,
}

// ---------------------------------------------------------------- trust (issue 13)

/// Which signing scheme produced a signature referrer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SignatureKind {
    Cosign,
    Notation,
}

/// The scanner that produced a vulnerability report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ScannerInfo {
    pub name: String,
    pub version: String,
}

/// Findings of one report, by severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub struct SeverityCounts {
    pub critical: u64,
    pub high: u64,
    pub medium: u64,
    pub low: u64,
    pub unknown: u64,
}

/// The format of an SBOM referrer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SbomFormat {
    Spdx,
    Cyclonedx,
}

/// The outcome of evaluating the trust policy for one digest. `audit` means it would fail
/// but the policy only reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicyVerdict {
    Pass,
    Fail,
    Audit,
}

/// Why a digest fails (or would fail) the trust policy. A closed set, so a list of them is
/// bounded by construction.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum PolicyReason {
    Unsigned,
    SignatureInvalid,
    SignerNotTrusted,
    SeverityAboveLimit,
    CveNotAllowed,
    NoSbom,
    /// The policy limits severity but no vulnerability report is attached.
    NoVulnerabilityReport,
}

impl PolicyReason {
    pub const ALL: [PolicyReason; 7] = [
        PolicyReason::Unsigned,
        PolicyReason::SignatureInvalid,
        PolicyReason::SignerNotTrusted,
        PolicyReason::SeverityAboveLimit,
        PolicyReason::CveNotAllowed,
        PolicyReason::NoSbom,
        PolicyReason::NoVulnerabilityReport,
    ];
}

/// One reason of a policy verdict with what the evaluator saw (`"CVE-2024-1234 (critical)
/// is not on the allow list"`), at most [`PolicyFinding::MAX_DETAIL`] characters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct PolicyFinding {
    pub reason: PolicyReason,
    pub detail: String,
}

impl PolicyFinding {
    pub const MAX_DETAIL: usize = 1024;
}

/// What a trust policy does with a failing image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    /// A failing image is not deployed.
    Enforce,
    /// A failing image is deployed and the violation recorded.
    #[default]
    Audit,
    /// Nothing is evaluated.
    Off,
}

/// The highest vulnerability severity a policy tolerates; `none` tolerates no finding.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SeverityLimit {
    #[serde(rename = "none")]
    Nothing,
    Low,
    Medium,
    High,
    Critical,
}

/// A public key a policy trusts (PEM: ECDSA P-256, Ed25519 or RSA ≥ 2048 bits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TrustedKey {
    /// A label for people (`release-key-2026`); the key id shown in findings is derived
    /// from the key itself.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    pub pem: String,
}

/// A signer identity a policy trusts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum TrustedIdentity {
    /// A keyless (Fulcio) signer: the certificate's OIDC issuer, exactly, and its subject
    /// (email or URI SAN) matched by a regex (anchor it: `^…$`).
    Keyless { issuer: String, subject: String },
    /// A Notation signer: the leaf certificate's subject DN (RFC 4514) matched by a regex.
    X509 { x509_subject: String },
}

/// A vulnerability a policy tolerates until `expires` (inclusive, UTC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CveAllowance {
    /// `CVE-2024-1234`, `GHSA-xxxx-xxxx-xxxx` or another scanner id, as reported.
    pub id: String,
    pub expires: chrono::NaiveDate,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

/// A repository rule's trust policy (issue 13): what an image under the rule must show
/// before it is deployed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TrustPolicy {
    pub mode: PolicyMode,
    /// With `keys` or `identities` set, an image needs a signature verified by one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<TrustedKey>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<TrustedIdentity>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_severity: Option<SeverityLimit>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_cves: Vec<CveAllowance>,
    #[serde(default)]
    pub require_sbom: bool,
}

/// When a deployment's violation was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ViolationStage {
    /// At deploy time under an `audit` policy: deployed anyway.
    Audited,
    /// After deploy: a new report or policy made the running image fail. Left running.
    Running,
}

/// How a tag mutation was noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MutationFoundBy {
    /// A periodic or requested scan.
    Scan,
    /// A registry push webhook.
    Webhook,
    /// A re-resolution at deploy time.
    Deploy,
    /// The rolling integrity sweep of immutable tags.
    Sweep,
}

/// A rule's retention policy, in Harbor's shape: a tag is kept when any rule keeps it or it
/// is protected (deployed, approved, or carrying a protected HM tag); every other tag the
/// rule selects would go. Only ever previewed: imagelib deletes nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RetentionPolicy {
    /// At most 15 (as Harbor).
    pub rules: Vec<RetentionRule>,
    /// HM tags that always keep an image (default: `approved-production`).
    #[serde(default = "default_protected_hm_tags")]
    pub protect_hm_tags: Vec<HmTag>,
}

fn default_protected_hm_tags() -> Vec<HmTag> {
    vec![HmTag::approved_production()]
}

/// One retention rule: which tags it looks at and which of them it keeps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RetentionRule {
    pub template: RetentionTemplate,
    /// For `latest_pushed` / `latest_pulled`: how many to keep.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// For `pushed_within_days` / `pulled_within_days`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<u32>,
    /// For `latest_pushed` / `latest_pulled`: count per repository or per major version.
    #[serde(default)]
    pub per: RetentionScope,
    /// The tags this rule considers (all when `include` is empty).
    #[serde(default)]
    pub tags: TagFilter,
}

/// Harbor's retention templates (`latestPushedK`, `latestPulledN`, `nDaysSinceLastPush`,
/// `nDaysSinceLastPull`, `always`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetentionTemplate {
    LatestPushed,
    LatestPulled,
    PushedWithinDays,
    PulledWithinDays,
    Always,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RetentionScope {
    #[default]
    Repository,
    /// Per major version (the first number of a version tag; tags without one share a group).
    Major,
}

/// Tags by pattern: included (all when empty), then excluded.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct TagFilter {
    #[serde(default)]
    pub include: Vec<TagPattern>,
    #[serde(default)]
    pub exclude: Vec<TagPattern>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_refs_parse() {
        let r: ImageRef = "0190f1d2-3c4b-7a5e-8f90-123456789abc/nvidia/nim/llm:1.0"
            .parse()
            .unwrap();
        assert_eq!(r.repository.as_str(), "nvidia/nim/llm");
        assert_eq!(r.tag.as_str(), "1.0");
        assert_eq!(
            r.to_string(),
            "0190f1d2-3c4b-7a5e-8f90-123456789abc/nvidia/nim/llm:1.0"
        );
        assert!("nope".parse::<ImageRef>().is_err());
        assert!("not-a-uuid/repo:tag".parse::<ImageRef>().is_err());
    }

    #[test]
    fn kube_names() {
        assert!("llama-3".parse::<KubeName>().is_ok());
        for bad in ["", "-a", "a-", "A", "a.b", &"a".repeat(64)] {
            assert!(bad.parse::<KubeName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn tag_selector_defaults_exclude_artifact_tags() {
        let t: TagSelector = serde_json::from_str("{}").unwrap();
        assert!(t.exclude_artifact_tags);
    }
}
