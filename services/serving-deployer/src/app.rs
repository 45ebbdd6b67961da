//! The command side: a deployment request is checked against the deployer's own view of
//! registries, tags and approvals, pinned to the digest its tag has now, appended as
//! `deployment.requested`, rendered and handed to the target, each step an event.
//!
//! Side effects (a commit, an apply) happen only here, in the request that asked for them
//! or in the recovery of a request that crashed midway — never when events are replayed —
//! so a rebuild never re-applies or re-commits anything.

use std::collections::BTreeMap;
use std::sync::Arc;

use imagelib_events::bus::{BusError, EventBus, Expect};
use imagelib_events::event::{
    DeploymentApplied, DeploymentDeleted, DeploymentFailed, DeploymentPolicyViolated,
    DeploymentRendered, DeploymentRequested,
};
use imagelib_events::model::{
    DeploymentTarget, ImageKind, ImageRef, KubeName, ManifestRef, PolicyFinding, PolicyMode,
    PolicyReason, PolicyVerdict, Resources, ViolationStage, WorkloadKind,
};
use imagelib_events::{
    DeploymentId, Digest, Envelope, EventPayload, ImageId, RegistryId, TraceParent,
};
use imagelib_platform::auth::Caller;
use serde_json::Value;

use crate::config::DeployerSettings;
use crate::render::{Manifest, cnpg, kserve};
use crate::store::{DeploymentRow, Store, StoreError, TagRow, VerdictRow};
use crate::target::gitops::Gitops;
use crate::target::kubernetes::Kubernetes;
use crate::target::{Applied, Change, TargetError};

/// Why a command was refused; mapped once to a problem in `api`.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("{pointer}: {message}")]
    Invalid { pointer: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    /// The image fails the trust policy that covers it, in `enforce` mode.
    #[error("{}", .0.detail())]
    PolicyViolation(Box<PolicyRefusal>),
    /// An `enforce` policy covers the image but it has no verdict yet.
    #[error("{0}")]
    PolicyPending(String),
    /// The digest came into its tag by a mutation and no curator approved it yet.
    #[error("{}", .0.detail())]
    TagMutated(Box<MutationRefusal>),
    #[error("{0}")]
    Unavailable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(pointer: &str, message: impl Into<String>) -> CommandError {
    CommandError::Invalid {
        pointer: pointer.into(),
        message: message.into(),
    }
}

impl From<BusError> for CommandError {
    fn from(e: BusError) -> Self {
        match e {
            BusError::Conflict { .. } => CommandError::Conflict(
                "another request for this deployment got there first; read it again and retry"
                    .into(),
            ),
            other => CommandError::Unavailable(format!("event stream: {other}")),
        }
    }
}

/// Why an image is refused by an `enforce` trust policy: the verdict as the scanner
/// published it.
#[derive(Debug, Clone, PartialEq)]
pub struct PolicyRefusal {
    /// `<registry-id>/<repository>:<tag>`
    pub image: String,
    pub digest: String,
    /// The rule whose trust policy refused it.
    pub policy: String,
    pub reasons: Vec<PolicyReason>,
    pub findings: Vec<PolicyFinding>,
}

/// The findings per reason quoted in a refusal's `detail`, and their length.
const DETAIL_FINDINGS: usize = 3;
const DETAIL_CHARS: usize = 200;

/// A reason in words, for people.
pub fn reason_words(r: PolicyReason) -> &'static str {
    match r {
        PolicyReason::Unsigned => "unsigned: no signature is attached to the image",
        PolicyReason::SignatureInvalid => "signature invalid: no attached signature verifies",
        PolicyReason::SignerNotTrusted => {
            "signer not trusted: no valid signature is by a key or identity the policy trusts"
        }
        PolicyReason::SeverityAboveLimit => {
            "severity above the limit: a vulnerability is more severe than the policy tolerates"
        }
        PolicyReason::CveNotAllowed => {
            "CVE not allowed: a vulnerability's allow-list entry has expired"
        }
        PolicyReason::NoSbom => "no SBOM: the policy requires one and none is attached",
        PolicyReason::NoVulnerabilityReport => {
            "no vulnerability report: the policy limits severity and no scan report is attached"
        }
    }
}

impl PolicyRefusal {
    /// Every reason in words, each with what the scanner saw.
    pub fn detail(&self) -> String {
        let mut out = format!(
            "image {} ({}) fails trust policy `{}` (enforce), so it was not deployed:",
            self.image, self.digest, self.policy
        );
        if self.reasons.is_empty() {
            out.push_str(" the verdict names no reason");
        }
        for (i, r) in self.reasons.iter().enumerate() {
            out.push_str(if i == 0 { " " } else { "; " });
            out.push_str(reason_words(*r));
            // A few of what was seen, shortened: `findings` has them all.
            let seen: Vec<&str> = self
                .findings
                .iter()
                .filter(|f| f.reason == *r && !f.detail.is_empty())
                .map(|f| f.detail.as_str())
                .collect();
            let mut shown: Vec<String> = seen
                .iter()
                .take(DETAIL_FINDINGS)
                .map(|d| match d.char_indices().nth(DETAIL_CHARS) {
                    Some((at, _)) => format!("{}…", &d[..at]),
                    None => (*d).to_owned(),
                })
                .collect();
            if seen.len() > DETAIL_FINDINGS {
                shown.push(format!("and {} more", seen.len() - DETAIL_FINDINGS));
            }
            if !shown.is_empty() {
                out.push_str(&format!(" ({})", shown.join(", ")));
            }
        }
        out
    }
}

/// Why the digest of a mutated tag is refused: the mutation, and how to approve it or keep
/// the old content.
#[derive(Debug, Clone, PartialEq)]
pub struct MutationRefusal {
    /// `<registry-id>/<repository>:<tag>`
    pub image: String,
    pub registry_id: RegistryId,
    pub repository: String,
    pub tag: String,
    /// What the tag pointed at before the mutation.
    pub old_digest: String,
    /// What it was found at: the digest refused.
    pub new_digest: String,
    pub found_by: String,
    pub seen_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl MutationRefusal {
    /// The CLI command that approves the new digest (a curator's).
    pub fn approve_command(&self) -> String {
        format!(
            "imagelib images approve {} --digest {} --reason '<why the new content is right>'",
            self.image, self.new_digest
        )
    }

    /// The same as an HTTP request.
    pub fn approve_curl(&self) -> String {
        format!(
            "curl -X POST \"$IMAGELIB_URL/v1/repositories/{}/{}/approve\" -H \"Authorization: Bearer $IMAGELIB_TOKEN\" -H 'Content-Type: application/json' -d '{{\"tag\": \"{}\", \"digest\": \"{}\", \"reason\": \"<why>\"}}'",
            self.registry_id, self.repository, self.tag, self.new_digest
        )
    }

    /// The image pinned to the content the tag had before.
    pub fn pin_old(&self) -> String {
        format!("{}@{}", self.image, self.old_digest)
    }

    pub fn detail(&self) -> String {
        let seen = match self.seen_at {
            Some(t) => format!(
                ", seen {}",
                t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
            None => String::new(),
        };
        format!(
            "tag `{}` of {}/{} was re-pushed although policy calls it immutable: it pointed at {} and now points at {} (found by {}{seen}). {} is not deployed until a curator approves that digest: `{}` (or `{}`). To keep running the content the tag had, deploy `{}`.",
            self.tag,
            self.registry_id,
            self.repository,
            self.old_digest,
            self.new_digest,
            self.found_by,
            self.new_digest,
            self.approve_command(),
            self.approve_curl(),
            self.pin_old(),
        )
    }
}

/// What the trust gate lets through: nothing to record, or a violation to record on the
/// deployment because an `audit` policy lets a failing image deploy.
#[derive(Debug, Clone, PartialEq)]
pub enum Gate {
    Open,
    Audited { policy: String, verdict: VerdictRow },
}

/// `POST /v1/deployments` and `POST /v1/provisioning/postgres`.
#[derive(Debug, Clone, serde::Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DeployRequest {
    /// `<registry-id>/<repository>:<tag>`, or the catalog's `<image-id>:<tag>`; with
    /// `@sha256:…` after the tag, that digest instead of the tag's current one — allowed
    /// only for the current digest or one the tag was mutated away from (to keep running
    /// the content a re-pushed tag had).
    pub image: String,
    pub name: String,
    pub namespace: String,
    #[serde(default = "one")]
    pub replicas: u32,
    /// `{"requests": {...}, "limits": {"nvidia.com/gpu": 1, "memory": "32Gi"}}`
    #[serde(default)]
    #[schema(value_type = Object)]
    pub resources: Resources,
    /// Runtime environment variables.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `gitops` (default) or `kubernetes`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub target: Option<DeploymentTarget>,
    /// For Postgres: `storage`, `storage_class`, `parameters`, `shared_preload_libraries`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub options: serde_json::Map<String, Value>,
}

fn one() -> u32 {
    1
}

/// The deployer's commands.
#[derive(Debug, Clone)]
pub struct Deployer {
    pub(crate) bus: EventBus,
    pub(crate) store: Store,
    pub(crate) settings: DeployerSettings,
    pub(crate) gitops: Gitops,
    pub(crate) kubernetes: Option<Kubernetes>,
}

/// The namespace of deployment ids: one deployment per `<namespace>/<name>`.
const DEPLOYMENT_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x3d1c_9e0a_55b4_4f0e_b2a7_6c81_4e9d_0f37);

pub fn deployment_id(namespace: &KubeName, name: &KubeName) -> DeploymentId {
    DeploymentId(uuid::Uuid::new_v5(
        &DEPLOYMENT_NAMESPACE,
        format!("{namespace}/{name}").as_bytes(),
    ))
}

fn env_name_ok(k: &str) -> bool {
    let b = k.as_bytes();
    !b.is_empty()
        && !b[0].is_ascii_digit()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

impl Deployer {
    pub fn store(&self) -> &Store {
        &self.store
    }

    async fn commit(&self, env: Envelope, expect: Expect) -> Result<u64, CommandError> {
        let r = self.bus.append(&env, expect).await?;
        self.store.apply(r.sequence, &env).await?;
        Ok(r.sequence)
    }

    fn envelope(
        &self,
        actor: &str,
        payload: impl Into<EventPayload>,
        tp: Option<TraceParent>,
    ) -> Envelope {
        Envelope::new(crate::NAME, payload)
            .with_actor(actor)
            .with_traceparent(tp)
    }

    /// Resolve `<registry-id>/<repository>:<tag>` or `<image-id>:<tag>`.
    pub async fn resolve(&self, image: &str) -> Result<ImageRef, CommandError> {
        if let Ok(r) = image.parse::<ImageRef>() {
            return Ok(r);
        }
        let (id, tag) = image.rsplit_once(':').ok_or_else(|| {
            invalid(
                "/image",
                "expected `<registry-id>/<repository>:<tag>` or `<image-id>:<tag>`",
            )
        })?;
        let image_id: ImageId = id.parse().map_err(|_| {
            invalid(
                "/image",
                "expected `<registry-id>/<repository>:<tag>` or `<image-id>:<tag>`",
            )
        })?;
        let tag = tag
            .parse()
            .map_err(|e: imagelib_events::OciParseError| invalid("/image", e.to_string()))?;
        let (registry_id, repository) =
            self.store.repository_of(image_id).await?.ok_or_else(|| {
                CommandError::NotFound(format!("no image with id {image_id} in the catalog"))
            })?;
        Ok(ImageRef {
            registry_id,
            repository: repository
                .parse()
                .map_err(|_| invalid("/image", "stored repository is not valid"))?,
            tag,
        })
    }

    /// Check a request and turn it into the event that records it.
    async fn check(
        &self,
        caller: &Caller,
        req: DeployRequest,
        workload: WorkloadKind,
    ) -> Result<(DeploymentRequested, TagRow, Gate), CommandError> {
        let name: KubeName = req
            .name
            .parse()
            .map_err(|e: imagelib_events::model::KubeNameError| invalid("/name", e.to_string()))?;
        let namespace: KubeName =
            req.namespace
                .parse()
                .map_err(|e: imagelib_events::model::KubeNameError| {
                    invalid("/namespace", e.to_string())
                })?;
        if req.replicas > 100 {
            return Err(invalid("/replicas", "at most 100"));
        }
        if let Some(k) = req.env.keys().find(|k| !env_name_ok(k)) {
            return Err(invalid(
                &format!("/env/{k}"),
                "not a valid environment variable name",
            ));
        }
        for (section, map) in [
            ("requests", &req.resources.requests),
            ("limits", &req.resources.limits),
        ] {
            for (k, v) in map {
                let ok = v.is_string() || v.is_u64() || v.is_f64();
                if !ok || k.is_empty() {
                    return Err(invalid(
                        &format!("/resources/{section}/{k}"),
                        "a quantity such as 2, \"500m\" or \"16Gi\"",
                    ));
                }
            }
        }
        let target = req.target.unwrap_or(self.settings.default_target);
        if target == DeploymentTarget::Kubernetes && self.kubernetes.is_none() {
            return Err(invalid(
                "/target",
                "the kubernetes target is not configured (IMAGELIB_DEPLOYER__KUBERNETES_API)",
            ));
        }
        let (reference, pinned) = match req.image.split_once('@') {
            Some((r, d)) => {
                let d: Digest = d.parse().map_err(|e: imagelib_events::OciParseError| {
                    invalid("/image", format!("after `@`: {e}"))
                })?;
                (r, Some(d))
            }
            None => (req.image.as_str(), None),
        };
        let image = self.resolve(reference).await?;
        let registry = self
            .store
            .registry(image.registry_id)
            .await?
            .filter(|r| caller.sees(&r.visibility))
            .ok_or_else(|| {
                CommandError::NotFound(format!(
                    "unknown registry {} (image {image})",
                    image.registry_id
                ))
            })?;
        if registry.removed {
            return Err(CommandError::Refused(format!(
                "registry `{}` was removed; its images cannot be deployed",
                registry.label
            )));
        }
        let tag = self
            .store
            .tag(
                image.registry_id,
                image.repository.as_str(),
                image.tag.as_str(),
            )
            .await?
            .ok_or_else(|| {
                CommandError::NotFound(format!(
                    "image {image} is not in the catalog (not discovered, or removed)"
                ))
            })?;
        match (workload, tag.kind) {
            (WorkloadKind::InferenceService, ImageKind::Model)
            | (WorkloadKind::PostgresCluster, ImageKind::Database) => {}
            (WorkloadKind::InferenceService, k) => {
                return Err(CommandError::Refused(format!(
                    "image {image} is a {} image, not a model; only model images deploy to KServe",
                    k.as_str()
                )));
            }
            (WorkloadKind::PostgresCluster, k) => {
                return Err(CommandError::Refused(format!(
                    "image {image} is a {} image, not a database image; only database images provision Postgres",
                    k.as_str()
                )));
            }
        }
        let digest: Digest = match pinned {
            None => tag
                .digest
                .parse()
                .map_err(|_| CommandError::Unavailable("stored digest is not valid".into()))?,
            Some(d) if d.as_str() == tag.digest => d,
            Some(d) => {
                let before = self
                    .store
                    .mutated_from(
                        image.registry_id,
                        image.repository.as_str(),
                        image.tag.as_str(),
                    )
                    .await?;
                if !before.iter().any(|b| b == d.as_str()) {
                    return Err(invalid(
                        "/image",
                        format!(
                            "{d} is neither the digest {image} points at ({}) nor one a mutation moved it away from{}",
                            tag.digest,
                            if before.is_empty() {
                                String::new()
                            } else {
                                format!(" ({})", before.join(", "))
                            }
                        ),
                    ));
                }
                d
            }
        };
        self.mutation_gate(&image, &digest).await?;
        if self.settings.governance
            && !self
                .store
                .approved(
                    image.registry_id,
                    image.repository.as_str(),
                    image.tag.as_str(),
                    digest.as_str(),
                )
                .await?
        {
            return Err(CommandError::Forbidden(format!(
                "image {image} ({digest}) is not approved; governance is on, so a curator must approve it first"
            )));
        }
        let gate = self.gate(&image, &digest).await?;
        let event = DeploymentRequested {
            deployment_id: deployment_id(&namespace, &name),
            image,
            digest,
            workload,
            name,
            namespace,
            replicas: req.replicas,
            resources: req.resources,
            env: req.env,
            target,
            options: req.options,
        };
        Ok((event, tag, gate))
    }

    /// The trust policy covering `repository:tag`: the first enabled rule admitting it, in
    /// rule-id order, that has one (the scanner's choice too); `None` when there is none or
    /// it is `off`. Returns the rule id and the mode.
    pub async fn policy_for(
        &self,
        registry: RegistryId,
        repository: &imagelib_events::RepositoryName,
        tag: &imagelib_events::Tag,
    ) -> Result<Option<(String, PolicyMode)>, CommandError> {
        let mut index = imagelib_rules::RuleSetIndex::new();
        for rule in self.store.rules(registry).await? {
            if let Err(e) = index.apply_set(&rule) {
                tracing::warn!(rule = %rule.rule_id, error = %e, "rule does not compile; ignored by the deploy gate");
            }
        }
        // The scanner evaluates a tag under the same rule (`trust_rule`), so a policy that
        // admits only some tags gates only those.
        Ok(index
            .trust_rule(repository, tag)
            .and_then(|r| {
                r.rule()
                    .trust
                    .as_ref()
                    .map(|t| (r.id().as_str().to_owned(), t.mode))
            })
            .filter(|(_, mode)| *mode != PolicyMode::Off))
    }

    /// The tag-mutated gate: a digest that came into its tag by a mutation (the tag is
    /// immutable by policy, yet was re-pushed) deploys only once a curator approved that
    /// digest of the tag. Content the tag had before a mutation is not gated by it.
    async fn mutation_gate(&self, image: &ImageRef, digest: &Digest) -> Result<(), CommandError> {
        let (registry, repository, tag) = (
            image.registry_id,
            image.repository.as_str(),
            image.tag.as_str(),
        );
        let Some(m) = self
            .store
            .mutation_into(registry, repository, tag, digest.as_str())
            .await?
        else {
            return Ok(());
        };
        if self
            .store
            .digest_approved(registry, repository, tag, digest.as_str())
            .await?
        {
            return Ok(());
        }
        tracing::info!(%image, %digest, old = %m.old_digest, "deploy refused: the tag was mutated and its new digest is not approved");
        Err(CommandError::TagMutated(Box::new(MutationRefusal {
            image: image.to_string(),
            registry_id: registry,
            repository: repository.to_owned(),
            tag: tag.to_owned(),
            old_digest: m.old_digest,
            new_digest: m.new_digest,
            found_by: m.found_by,
            seen_at: m.seen_at,
        })))
    }

    /// The deploy gate. The rules say whether an `enforce` or `audit` policy covers the
    /// image now; the scanner's latest verdict for the digest says whether it fails.
    /// Under `enforce` a failing verdict (`fail`, or `audit` published before the policy
    /// became enforcing) refuses and no verdict yet is pending; under `audit` a failing
    /// verdict deploys and is recorded; no policy deploys as before.
    async fn gate(&self, image: &ImageRef, digest: &Digest) -> Result<Gate, CommandError> {
        let Some((policy, mode)) = self
            .policy_for(image.registry_id, &image.repository, &image.tag)
            .await?
        else {
            return Ok(Gate::Open);
        };
        let verdict = self
            .store
            .verdict(
                image.registry_id,
                image.repository.as_str(),
                digest.as_str(),
            )
            .await?;
        let failing = verdict
            .as_ref()
            .is_some_and(|v| v.verdict != PolicyVerdict::Pass);
        match (mode, verdict) {
            (PolicyMode::Enforce, None) => Err(CommandError::PolicyPending(format!(
                "image {image} ({digest}) is covered by trust policy `{policy}` (enforce) but is not evaluated yet: scan the registry (`imagelib registry sync {}`) and deploy again once its signatures and reports are read",
                image.registry_id
            ))),
            (PolicyMode::Enforce, Some(v)) if failing => {
                tracing::info!(%image, %digest, %policy, reasons = ?v.reasons, "deploy refused by its trust policy");
                Err(CommandError::PolicyViolation(Box::new(PolicyRefusal {
                    image: image.to_string(),
                    digest: digest.to_string(),
                    policy: v.policy.clone().unwrap_or(policy),
                    reasons: v.reasons,
                    findings: v.findings,
                })))
            }
            (PolicyMode::Audit, Some(v)) if failing => Ok(Gate::Audited {
                policy: v.policy.clone().unwrap_or(policy),
                verdict: v,
            }),
            _ => Ok(Gate::Open),
        }
    }

    /// Record a `running` violation on each running deployment whose digest a new verdict
    /// turned fail/audit; the deployment itself is left alone. Returns how many were
    /// recorded. Each append expects the deployment's last sequence, so a replica racing
    /// this one (or a view still catching up) records nothing twice.
    pub async fn flag_running_violations(&self) -> Result<usize, CommandError> {
        let mut recorded = 0;
        for (row, verdict) in self.store.newly_violated(100).await? {
            let event = violation(
                &row,
                ViolationStage::Running,
                verdict.policy.clone(),
                &verdict,
            );
            match self
                .commit(
                    self.envelope(
                        "system:serving-deployer",
                        event,
                        Some(TraceParent::new_root()),
                    ),
                    Expect::LastSequence(row.last_sequence),
                )
                .await
            {
                Ok(_) => {
                    recorded += 1;
                    tracing::warn!(deployment = %row.id, digest = %row.request.digest, "a running deployment's image now fails its trust policy");
                }
                Err(CommandError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(recorded)
    }

    /// Deploy (or update) `namespace/name`. Returns the deployment and whether anything
    /// new was requested (a redeploy of the same spec is a no-op).
    pub async fn deploy(
        &self,
        caller: &Caller,
        req: DeployRequest,
        workload: WorkloadKind,
        tp: Option<TraceParent>,
    ) -> Result<(DeploymentRow, bool), CommandError> {
        let (event, tag, gate) = self.check(caller, req, workload).await?;
        let id = event.deployment_id;
        let expect = match self.store.deployment(id).await? {
            Some(existing) if existing.state != "deleted" => {
                let same = {
                    let mut a = existing.request.clone();
                    a.deployment_id = id;
                    a == event
                };
                if same && existing.state != "failed" {
                    return Ok((existing, false));
                }
                Expect::LastSequence(existing.last_sequence)
            }
            Some(deleted) => Expect::LastSequence(deleted.last_sequence),
            None => Expect::NoEvents,
        };
        let seq = self
            .commit(self.envelope(&caller.subject, event, tp), expect)
            .await?;
        if let Gate::Audited { policy, verdict } = &gate
            && let Some(row) = self.store.deployment(id).await?
        {
            let audited = violation(&row, ViolationStage::Audited, Some(policy.clone()), verdict);
            self.commit(
                self.envelope(&caller.subject, audited, tp),
                Expect::LastSequence(seq),
            )
            .await?;
        }
        let row = self.reconcile(id, &caller.subject, Some(&tag), tp).await?;
        Ok((row, true))
    }

    fn image_ref(&self, host: &str, req: &DeploymentRequested) -> String {
        format!("{host}/{}@{}", req.image.repository, req.digest)
    }

    /// Render and apply a requested deployment, recording each step.
    pub async fn reconcile(
        &self,
        id: DeploymentId,
        actor: &str,
        tag: Option<&TagRow>,
        tp: Option<TraceParent>,
    ) -> Result<DeploymentRow, CommandError> {
        let row = self
            .store
            .deployment(id)
            .await?
            .ok_or_else(|| CommandError::NotFound(format!("deployment {id} not found")))?;
        if row.state != "requested" {
            return Ok(row);
        }
        let req = &row.request;
        let tag = match tag {
            Some(t) => Some(t.clone()),
            None => {
                self.store
                    .tag(
                        req.image.registry_id,
                        req.image.repository.as_str(),
                        req.image.tag.as_str(),
                    )
                    .await?
            }
        };
        let registry = self.store.registry(req.image.registry_id).await?;
        let Some(registry) = registry.filter(|r| !r.removed) else {
            return self
                .fail(&row, actor, "the image's registry was removed", tp)
                .await;
        };
        let image = self.image_ref(registry.host(), req);
        let manifests = self.render(req, &image, tag.as_ref());
        let rendered = DeploymentRendered {
            deployment_id: id,
            manifests: manifests.iter().map(Manifest::reference).collect(),
        };
        let seq = self
            .commit(
                self.envelope(actor, rendered, tp),
                Expect::LastSequence(row.last_sequence),
            )
            .await?;
        let change = Change {
            deployment_id: id.to_string(),
            namespace: req.namespace.as_str(),
            name: req.name.as_str(),
            actor,
        };
        let applied = match req.target {
            DeploymentTarget::Gitops => self.gitops.apply(&change, &manifests).await,
            DeploymentTarget::Kubernetes => match &self.kubernetes {
                Some(k) => k.apply(&change, &manifests).await,
                None => Err(TargetError::NotConfigured("kubernetes")),
            },
        };
        let event: EventPayload = match applied {
            Ok(Applied { revision, .. }) => DeploymentApplied {
                deployment_id: id,
                target: req.target,
                revision,
            }
            .into(),
            Err(e) => DeploymentFailed {
                deployment_id: id,
                reason: e.to_string(),
            }
            .into(),
        };
        self.commit(self.envelope(actor, event, tp), Expect::LastSequence(seq))
            .await?;
        self.store
            .deployment(id)
            .await?
            .ok_or_else(|| CommandError::NotFound(format!("deployment {id} not found")))
    }

    async fn fail(
        &self,
        row: &DeploymentRow,
        actor: &str,
        reason: &str,
        tp: Option<TraceParent>,
    ) -> Result<DeploymentRow, CommandError> {
        let failed = DeploymentFailed {
            deployment_id: row.id,
            reason: reason.into(),
        };
        self.commit(
            self.envelope(actor, failed, tp),
            Expect::LastSequence(row.last_sequence),
        )
        .await?;
        self.store
            .deployment(row.id)
            .await?
            .ok_or_else(|| CommandError::NotFound("deployment vanished".into()))
    }

    pub fn render(
        &self,
        req: &DeploymentRequested,
        image: &str,
        tag: Option<&TagRow>,
    ) -> Vec<Manifest> {
        match req.workload {
            WorkloadKind::PostgresCluster => vec![cnpg::cluster(
                req,
                image,
                self.settings.pull_secret.as_deref(),
            )],
            WorkloadKind::InferenceService => {
                let empty = serde_json::Map::new();
                let (labels, annotations) = tag
                    .map(|t| (&t.labels, &t.annotations))
                    .unwrap_or((&empty, &empty));
                let nim =
                    kserve::is_nim(req.image.repository.as_str(), labels, annotations).then(|| {
                        kserve::NimSettings {
                            ngc_secret: &self.settings.ngc_secret,
                            model_format: format!(
                                "nvidia-nim-{}",
                                req.image.repository.short_name()
                            ),
                            cache_size: &self.settings.nim_cache_size,
                        }
                    });
                kserve::render(
                    req,
                    &kserve::ModelContext {
                        image,
                        pull_secret: self.settings.pull_secret.as_deref(),
                        nim,
                        port: self.settings.model_port,
                    },
                )
            }
        }
    }

    /// Remove a deployment's manifests from its target and record it.
    pub async fn delete(
        &self,
        caller: &Caller,
        id: DeploymentId,
        tp: Option<TraceParent>,
    ) -> Result<(), CommandError> {
        let row = self
            .store
            .deployment(id)
            .await?
            .filter(|r| r.state != "deleted")
            .ok_or_else(|| CommandError::NotFound(format!("deployment {id} not found")))?;
        self.visible(caller, &row).await?;
        let change = Change {
            deployment_id: id.to_string(),
            namespace: row.namespace.as_str(),
            name: row.name.as_str(),
            actor: &caller.subject,
        };
        let removed = match row.request.target {
            DeploymentTarget::Gitops => self.gitops.delete(&change).await.map(|a| Some(a.revision)),
            DeploymentTarget::Kubernetes => match &self.kubernetes {
                Some(k) => k
                    .delete(&change, &from_refs(&row.manifests))
                    .await
                    .map(|_| None),
                None => Err(TargetError::NotConfigured("kubernetes")),
            },
        }
        .map_err(|e| CommandError::Unavailable(e.to_string()))?;
        let deleted = DeploymentDeleted {
            deployment_id: id,
            revision: removed,
        };
        self.commit(
            self.envelope(&caller.subject, deleted, tp),
            Expect::LastSequence(row.last_sequence),
        )
        .await?;
        Ok(())
    }

    /// The caller sees deployments of registries it sees.
    pub async fn visible(&self, caller: &Caller, row: &DeploymentRow) -> Result<(), CommandError> {
        let registry = self.store.registry(row.request.image.registry_id).await?;
        match registry {
            Some(r) if !caller.sees(&r.visibility) => Err(CommandError::NotFound(format!(
                "deployment {} not found",
                row.id
            ))),
            _ => Ok(()),
        }
    }

    /// The `ClusterImageCatalog` of a database repository: each major → its newest tag's
    /// digest (approved ones only while governance is on; never a digest that came into its
    /// tag by a mutation and is not approved).
    pub async fn image_catalog(
        &self,
        caller: &Caller,
        repository: &str,
        name: Option<&str>,
    ) -> Result<Manifest, CommandError> {
        let (registry, repo) = repository
            .split_once('/')
            .ok_or_else(|| invalid("repository", "expected `<registry-id>/<repository>`"))?;
        let registry_id: RegistryId = registry
            .parse()
            .map_err(|_| invalid("repository", "expected `<registry-id>/<repository>`"))?;
        let repo_name: imagelib_events::RepositoryName = repo
            .parse()
            .map_err(|e: imagelib_events::OciParseError| invalid("repository", e.to_string()))?;
        let reg = self
            .store
            .registry(registry_id)
            .await?
            .filter(|r| !r.removed && caller.sees(&r.visibility))
            .ok_or_else(|| CommandError::NotFound(format!("unknown registry {registry_id}")))?;
        let tags = self.store.tags_of(registry_id, repo).await?;
        if tags.is_empty() {
            return Err(CommandError::NotFound(format!(
                "no tags of {repository} in the catalog"
            )));
        }
        // A re-pushed tag's new digest is not handed out before a curator approved it.
        let held = self
            .store
            .unapproved_mutated_tags(registry_id, repo)
            .await?;
        let mut best: BTreeMap<u32, (Vec<u64>, String)> = BTreeMap::new();
        for t in tags
            .iter()
            .filter(|t| t.kind == ImageKind::Database && !held.contains(&t.tag))
        {
            let Some(major) = cnpg::major_of(&t.tag) else {
                continue;
            };
            if self.settings.governance
                && !self
                    .store
                    .approved(registry_id, repo, &t.tag, &t.digest)
                    .await?
            {
                continue;
            }
            let key = cnpg::version_key(&t.tag);
            let image = format!("{}/{}@{}", reg.host(), repo, t.digest);
            match best.get(&major) {
                Some((k, _)) if *k >= key => {}
                _ => {
                    best.insert(major, (key, image));
                }
            }
        }
        if best.is_empty() {
            return Err(CommandError::Refused(format!(
                "{repository} has no {}database tag named by a PostgreSQL major version",
                if self.settings.governance {
                    "approved "
                } else {
                    ""
                }
            )));
        }
        let entries: Vec<cnpg::CatalogEntry> = best
            .into_iter()
            .map(|(major, (_, image))| cnpg::CatalogEntry { major, image })
            .collect();
        let default_name = repo_name.short_name().to_owned();
        let name = name.unwrap_or(&default_name);
        let name: KubeName = name
            .parse()
            .map_err(|e: imagelib_events::model::KubeNameError| invalid("name", e.to_string()))?;
        Ok(cnpg::image_catalog(name.as_str(), &entries))
    }
}

fn violation(
    row: &DeploymentRow,
    stage: ViolationStage,
    policy: Option<String>,
    verdict: &VerdictRow,
) -> DeploymentPolicyViolated {
    DeploymentPolicyViolated {
        deployment_id: row.id,
        digest: row.request.digest.clone(),
        reasons: verdict.reasons.clone(),
        stage,
        policy: policy.and_then(|p| p.parse().ok()),
        findings: verdict.findings.clone(),
    }
}

/// Manifests rebuilt from their references (enough to address them for a delete).
fn from_refs(refs: &[ManifestRef]) -> Vec<Manifest> {
    refs.iter()
        .map(|r| {
            let mut meta = serde_json::json!({"name": r.name});
            if let Some(ns) = &r.namespace {
                meta["namespace"] = serde_json::json!(ns);
            }
            Manifest {
                object: serde_json::json!({"apiVersion": r.api_version, "kind": r.kind, "metadata": meta}),
            }
        })
        .collect()
}

/// Shared handle for the HTTP layer.
pub type App = Arc<Deployer>;

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(reasons: &[PolicyReason], findings: &[(PolicyReason, &str)]) -> PolicyRefusal {
        PolicyRefusal {
            image: "r/acme/llm:1.0".into(),
            digest: "sha256:ab".into(),
            policy: "prod".into(),
            reasons: reasons.to_vec(),
            findings: findings
                .iter()
                .map(|(reason, detail)| PolicyFinding {
                    reason: *reason,
                    detail: (*detail).into(),
                })
                .collect(),
        }
    }

    #[test]
    fn every_reason_has_its_own_words_in_the_detail() {
        let all = refusal(&PolicyReason::ALL, &[]);
        let detail = all.detail();
        let mut words: Vec<&str> = PolicyReason::ALL.iter().map(|r| reason_words(*r)).collect();
        for w in &words {
            assert!(detail.contains(w), "{w} not in {detail}");
        }
        words.sort_unstable();
        words.dedup();
        assert_eq!(words.len(), PolicyReason::ALL.len());
        assert!(detail.starts_with("image r/acme/llm:1.0 (sha256:ab) fails trust policy `prod`"));
    }

    #[test]
    fn findings_go_with_their_reason_and_a_reasonless_verdict_says_so() {
        let r = refusal(
            &[PolicyReason::CveNotAllowed, PolicyReason::NoSbom],
            &[
                (PolicyReason::NoSbom, "none attached"),
                (
                    PolicyReason::CveNotAllowed,
                    "CVE-2024-1 allowed until 2024-01-31",
                ),
                (PolicyReason::CveNotAllowed, ""),
            ],
        );
        assert!(
            r.detail().ends_with(
                "CVE not allowed: a vulnerability's allow-list entry has expired (CVE-2024-1 allowed until 2024-01-31); no SBOM: the policy requires one and none is attached (none attached)"
            ),
            "{}",
            r.detail()
        );
        assert!(
            refusal(&[], &[])
                .detail()
                .ends_with("the verdict names no reason")
        );
    }
}
