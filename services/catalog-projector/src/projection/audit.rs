//! The audit trail: one row per event of the stream, for `GET /v1/audit`.
//!
//! Why here, in the catalog's transaction: the rows are written by the same
//! [`super::Projection::apply_batch`] that writes the catalog and records the position, so
//! each event is audited exactly once (a redelivery is skipped with the rest of the batch),
//! the trail never has a gap that fills in later (pages stay stable while events arrive),
//! and a rebuild replays it like every other table.
//!
//! Why a summary and not the data: the trail is read by people who may not see everything
//! an event carries. A row keeps who (the `actor` extension), what (type, subject and a
//! sentence written here), when (the event time), the trace id, the registry, repository,
//! tag and digest when the event names them; the API path of the object is derived from
//! those when read ([`link`]). Sealed
//! credentials, webhook and subscription secrets, subscription URL paths (a Slack-style URL
//! is itself a secret), deployment `env` values and README bodies are never copied.
//!
//! Why it is cheap: the rows of a batch are described while the batch is applied and sent
//! with one binary `COPY` at its end (no text parsing of ids and times on the server);
//! only deployment events after the request, which do not name their image, cost a lookup
//! (one query per batch that has any). `catalog-bench` prints the replay rate with and
//! without the trail side by side.

use std::collections::{HashMap, HashSet};
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use imagelib_events::{Digest, Envelope, EventPayload, RegistryId, RepositoryName};
use uuid::Uuid;

use super::{enum_str, micros};
use crate::copy::{BinaryRows, CopyRow};

/// Microseconds spent encoding and writing audit rows (the bench prints it).
pub static WRITE_MICROS: AtomicU64 = AtomicU64::new(0);

/// The longest summary kept, in characters.
pub const MAX_SUMMARY: usize = 400;

const COPY: &str = "COPY audit (sequence, event_id, at, actor, source, event_type, subject, summary, \
     trace_id, registry_id, repository, tag, digest) FROM STDIN (FORMAT binary)";
/// Columns of a row, as the binary format counts them.
const COLUMNS: i16 = 13;

/// What one event says about its object, besides the envelope.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Entry {
    pub summary: String,
    pub registry_id: Option<Uuid>,
    pub repository: Option<String>,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

/// The audit rows of one batch, described while the batch is applied, written at its end.
#[derive(Debug)]
pub(crate) struct Trail<'a> {
    rows: Vec<(u64, &'a Envelope, Entry)>,
    /// Rows of deployment events whose image is looked up at the end of the batch (after
    /// the request they follow has been projected), with the deployment.
    pending: Vec<(usize, Uuid)>,
    spent: std::time::Duration,
}

impl<'a> Trail<'a> {
    pub(crate) fn new() -> Self {
        Trail {
            rows: Vec::new(),
            pending: Vec::new(),
            spent: std::time::Duration::ZERO,
        }
    }

    /// Audit the event at stream sequence `sequence`.
    pub(crate) fn push(&mut self, sequence: u64, env: &'a Envelope) {
        let t = std::time::Instant::now();
        let entry = describe(&env.payload);
        if let Some(id) = deployment_to_resolve(&env.payload)
            && entry.registry_id.is_none()
        {
            self.pending.push((self.rows.len(), id));
        }
        self.rows.push((sequence, env, entry));
        self.spent += t.elapsed();
    }

    /// Write the batch's rows (within the batch's transaction). Rows already there are
    /// left alone: the position makes that impossible in a normal run, but a position set
    /// back by hand to re-apply events must not stop the projector on a duplicate key.
    pub(crate) async fn write(mut self, tx: &mut sqlx::PgConnection) -> Result<(), sqlx::Error> {
        let t = std::time::Instant::now();
        let (Some(first), Some(last)) = (
            self.rows.iter().map(|r| r.0).min(),
            self.rows.iter().map(|r| r.0).max(),
        ) else {
            return Ok(());
        };
        if !self.pending.is_empty() {
            let ids: Vec<Uuid> = self.pending.iter().map(|p| p.1).collect();
            let rows: Vec<(Uuid, Uuid, String, String, String)> = sqlx::query_as(
                "SELECT id, registry_id, repository, tag, digest FROM deployments WHERE id = ANY($1)",
            )
            .bind(&ids)
            .fetch_all(&mut *tx)
            .await?;
            let found: HashMap<Uuid, (Uuid, String, String, String)> = rows
                .into_iter()
                .map(|(id, g, r, t, d)| (id, (g, r, t, d)))
                .collect();
            for (i, id) in std::mem::take(&mut self.pending) {
                let entry = &mut self.rows[i].2;
                if let Some((g, r, t, d)) = found.get(&id) {
                    entry.registry_id = Some(*g);
                    entry.repository = Some(r.clone());
                    entry.tag = Some(t.clone());
                    if entry.digest.is_none() {
                        entry.digest = Some(d.clone());
                    }
                }
            }
        }
        // One index probe in the normal case (the trail ends below the batch).
        let newest: Option<i64> = sqlx::query_scalar("SELECT max(sequence) FROM audit")
            .fetch_one(&mut *tx)
            .await?;
        let present: HashSet<i64> = match newest {
            Some(n) if n >= first as i64 => {
                sqlx::query_scalar("SELECT sequence FROM audit WHERE sequence BETWEEN $1 AND $2")
                    .bind(first as i64)
                    .bind(last as i64)
                    .fetch_all(&mut *tx)
                    .await?
                    .into_iter()
                    .collect()
            }
            _ => HashSet::new(),
        };
        let mut buf = BinaryRows::new();
        for (sequence, env, entry) in &self.rows {
            if !present.contains(&(*sequence as i64)) {
                encode(&mut buf, *sequence, env, entry);
            }
        }
        if buf.rows() > 0 {
            let mut copy = tx.copy_in_raw(COPY).await?;
            copy.send(buf.finish()).await?;
            copy.finish().await?;
        }
        let spent = self.spent + t.elapsed();
        WRITE_MICROS.fetch_add(spent.as_micros() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// The audit trail of a bulk replay, described and written by a task of its own on a
/// connection of its own, batch by batch after each batch of the catalog commits, so that
/// PostgreSQL takes both at once and the replay's loop does not wait for it. A bulk replay
/// fills a schema nothing reads until the rebuild swaps it in, and that is started over
/// should it fail, so the trail need not share the batches' transactions there; the live
/// consumer writes it in them ([`Trail::write`]).
#[derive(Debug)]
pub(crate) struct Writer {
    batches: tokio::sync::mpsc::Sender<Vec<super::Item>>,
    task: tokio::task::JoinHandle<Result<(), sqlx::Error>>,
}

impl Writer {
    pub(crate) async fn start(pool: &sqlx::PgPool) -> Result<Self, sqlx::Error> {
        use sqlx::Connection;
        let mut conn = pool.acquire().await?.detach();
        sqlx::query("SET synchronous_commit = off")
            .execute(&mut conn)
            .await?;
        // One batch in flight at most: the replay waits rather than buffering the trail.
        let (batches, mut rx) = tokio::sync::mpsc::channel::<Vec<super::Item>>(1);
        let task = tokio::spawn(async move {
            while let Some(items) = rx.recv().await {
                let mut trail = Trail::new();
                for item in &items {
                    if let Some(env) = &item.envelope {
                        trail.push(item.sequence, env);
                    }
                }
                let mut tx = conn.begin().await?;
                trail.write(&mut tx).await?;
                tx.commit().await?;
            }
            conn.close().await
        });
        Ok(Writer { batches, task })
    }

    /// A sender of committed batches; a send fails once the writer has failed.
    pub(crate) fn sender(&self) -> tokio::sync::mpsc::Sender<Vec<super::Item>> {
        self.batches.clone()
    }

    /// Wait until every batch sent is written; the writer's error, if it failed.
    pub(crate) async fn finish(self) -> Result<(), sqlx::Error> {
        drop(self.batches);
        match self.task.await {
            Ok(r) => r,
            Err(e) => Err(sqlx::Error::Io(std::io::Error::other(format!(
                "the audit trail's writer stopped: {e}"
            )))),
        }
    }
}

/// The deployment a deployment event names without its image.
fn deployment_to_resolve(p: &EventPayload) -> Option<Uuid> {
    match p {
        EventPayload::DeploymentRendered(e) => Some(e.deployment_id.0),
        EventPayload::DeploymentApplied(e) => Some(e.deployment_id.0),
        EventPayload::DeploymentFailed(e) => Some(e.deployment_id.0),
        EventPayload::DeploymentDeleted(e) => Some(e.deployment_id.0),
        EventPayload::DeploymentPolicyViolated(e) => Some(e.deployment_id.0),
        _ => None,
    }
}

fn encode(buf: &mut BinaryRows, sequence: u64, env: &Envelope, e: &Entry) {
    buf.begin_row(COLUMNS);
    buf.put_int8(sequence as i64);
    buf.put_uuid(env.id.0);
    buf.put_time(micros(env.time));
    buf.put_opt_text(env.actor.as_deref());
    buf.put_text(&env.source);
    buf.put_text(env.event_type());
    buf.put_text(&env.payload.subject());
    buf.put_text(&e.summary);
    buf.put_opt_text(
        env.traceparent
            .as_ref()
            .map(|tp| tp.trace_id_hex())
            .as_deref(),
    );
    match e.registry_id {
        Some(g) => buf.put_uuid(g),
        None => buf.put_null(),
    }
    buf.put_opt_text(e.repository.as_deref());
    buf.put_opt_text(e.tag.as_deref());
    buf.put_opt_text(e.digest.as_deref());
}

/// The API path of what an entry is about: the registry (registry and sync events), the
/// rule, the repository (image and catalog events), the deployment or the subscription.
pub fn link(
    event_type: &str,
    subject: &str,
    registry_id: Option<Uuid>,
    repository: Option<&str>,
) -> Option<String> {
    let aggregate = event_type.strip_prefix("io.imagelib.")?.split('.').next()?;
    match aggregate {
        "registry" | "sync" => registry_id.map(|g| format!("/v1/registries/{g}")),
        "rule" => subject
            .strip_prefix("registry/")
            .map(|rest| format!("/v1/registries/{rest}")),
        "image" | "catalog" => match (registry_id, repository) {
            (Some(g), Some(r)) => Some(format!("/v1/repositories/{g}/{r}")),
            _ => None,
        },
        "deployment" => subject
            .strip_prefix("deployment/")
            .map(|id| format!("/v1/deployments/{id}")),
        "subscription" => subject
            .strip_prefix("subscription/")
            .map(|id| format!("/v1/subscriptions/{id}")),
        _ => None,
    }
}

// ---------------------------------------------------------------- what an event says

/// `sha256:` and the first 12 hex digits.
fn short(d: &Digest) -> &str {
    let s = d.as_str();
    match s.find(':') {
        Some(i) => &s[..(i + 13).min(s.len())],
        None => s,
    }
}

/// Bytes for people: `4.0 GB`, `150.0 MB`, `812 B`.
fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Only the scheme and host of a URL: the path or query of a webhook URL may be its secret.
fn origin(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{}://{h}:{p}", u.scheme()),
            (Some(h), None) => format!("{}://{h}", u.scheme()),
            _ => u.scheme().to_owned(),
        },
        Err(_) => "an unparsable URL".to_owned(),
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn clip(mut s: String) -> String {
    if s.chars().count() > MAX_SUMMARY {
        let cut = s
            .char_indices()
            .nth(MAX_SUMMARY - 1)
            .map_or(s.len(), |(i, _)| i);
        s.truncate(cut);
        s.push('…');
    }
    s
}

fn image(registry: RegistryId, repository: &RepositoryName, summary: String) -> Entry {
    Entry {
        summary,
        registry_id: Some(registry.0),
        repository: Some(repository.as_str().to_owned()),
        ..Default::default()
    }
}

fn registry(registry: RegistryId, summary: String) -> Entry {
    Entry {
        summary,
        registry_id: Some(registry.0),
        ..Default::default()
    }
}

/// The summary and the object of an event. Never a secret (see the module docs).
pub fn describe(p: &EventPayload) -> Entry {
    let mut e = match p {
        // ------------------------------------------------------------ registries
        EventPayload::RegistryRegistered(e) => {
            let mut s = format!(
                "registered \"{}\" ({}, {}{}), auth {}",
                e.label,
                enum_str(&e.registry_type),
                e.url,
                if e.insecure { ", plain HTTP" } else { "" },
                enum_str(&e.auth_kind)
            );
            if !e.visibility.is_empty() {
                let _ = write!(s, ", visible to {}", e.visibility.join(", "));
            }
            if e.report_pulls {
                s.push_str(", pulls reported");
            }
            registry(e.registry_id, s)
        }
        EventPayload::RegistryUpdated(e) => {
            let mut changes: Vec<String> = Vec::new();
            if let Some(l) = &e.label {
                changes.push(format!("label \"{l}\""));
            }
            if let Some(u) = &e.url {
                changes.push(format!("url {u}"));
            }
            if let Some(i) = e.insecure {
                changes.push(if i { "plain HTTP" } else { "HTTPS" }.into());
            }
            if let Some(t) = &e.registry_type {
                changes.push(format!("type {}", enum_str(t)));
            }
            if let Some(v) = &e.visibility {
                changes.push(if v.is_empty() {
                    "visible to every team".into()
                } else {
                    format!("visible to {}", v.join(", "))
                });
            }
            match &e.ca_pem {
                Some(Some(_)) => changes.push("custom CA set".into()),
                Some(None) => changes.push("custom CA removed".into()),
                None => {}
            }
            if let Some(n) = e.scan_interval_secs {
                changes.push(format!("scan every {n} s"));
            }
            if let Some(r) = &e.repositories {
                changes.push(plural(
                    r.len() as u64,
                    "listed repository",
                    "listed repositories",
                ));
            }
            if let Some(h) = &e.auth_hosts {
                changes.push(format!("auth hosts [{}]", h.join(", ")));
            }
            if let Some(r) = e.report_pulls {
                changes.push(
                    if r {
                        "pulls reported"
                    } else {
                        "pulls not reported"
                    }
                    .into(),
                );
            }
            if let Some(k) = &e.auth_kind {
                changes.push(format!("new credentials (auth {})", enum_str(k)));
            } else if e.credential.is_some() {
                changes.push("new credentials".into());
            }
            let s = if changes.is_empty() {
                "updated".to_owned()
            } else {
                format!("updated: {}", changes.join(", "))
            };
            registry(e.registry_id, s)
        }
        EventPayload::RegistryCredentialsRotated(e) => {
            let mut s = format!("credentials rotated (auth {})", enum_str(&e.auth_kind));
            if e.webhook_secret.is_some() {
                s.push_str("; new webhook secret");
            }
            registry(e.registry_id, s)
        }
        EventPayload::RegistryValidated(e) => registry(
            e.registry_id,
            format!(
                "validated ({}catalog {})",
                e.auth_scheme
                    .as_deref()
                    .map(|a| format!("auth {a}, "))
                    .unwrap_or_default(),
                if e.catalog_access {
                    "readable"
                } else {
                    "not readable"
                }
            ),
        ),
        EventPayload::RegistryValidationFailed(e) => registry(
            e.registry_id,
            format!("validation failed ({}): {}", enum_str(&e.reason), e.detail),
        ),
        EventPayload::RegistryRemoved(e) => registry(e.registry_id, "removed".into()),

        // ------------------------------------------------------------ rules
        EventPayload::RuleSet(e) => {
            let mut s = format!(
                "rule {} set: {}, kind {}, {}",
                e.rule_id,
                plural(
                    e.repositories.len() as u64,
                    "repository pattern",
                    "repository patterns"
                ),
                enum_str(&e.kind),
                if e.enabled { "enabled" } else { "disabled" }
            );
            if let Some(t) = &e.trust {
                let _ = write!(s, ", trust policy {}", enum_str(&t.mode));
            }
            if let Some(r) = &e.retention {
                let _ = write!(
                    s,
                    ", {}",
                    plural(r.rules.len() as u64, "retention rule", "retention rules")
                );
            }
            Entry {
                summary: s,
                registry_id: Some(e.registry_id.0),
                ..Default::default()
            }
        }
        EventPayload::RuleRemoved(e) => Entry {
            summary: format!("rule {} removed", e.rule_id),
            registry_id: Some(e.registry_id.0),
            ..Default::default()
        },

        // ------------------------------------------------------------ syncs
        EventPayload::SyncRequested(e) => {
            let mut s = format!("sync requested ({}", enum_str(&e.reason));
            if let Some(r) = &e.repository {
                let _ = write!(s, ", repository {r}");
            }
            s.push(')');
            let mut entry = registry(e.registry_id, s);
            entry.repository = e.repository.as_ref().map(|r| r.as_str().to_owned());
            entry
        }
        EventPayload::SyncStarted(e) => {
            let mut s = format!("sync started ({}", enum_str(&e.reason));
            if let Some(r) = &e.repository {
                let _ = write!(s, ", repository {r}");
            }
            s.push(')');
            let mut entry = registry(e.registry_id, s);
            entry.repository = e.repository.as_ref().map(|r| r.as_str().to_owned());
            entry
        }
        EventPayload::SyncCompleted(e) => {
            let mut s = format!(
                "sync completed: {}, {} seen, {} added, {} moved, {} removed, {} in {} ms",
                plural(e.repositories, "repository", "repositories"),
                plural(e.tags_seen, "tag", "tags"),
                e.added,
                e.moved,
                e.removed,
                plural(e.requests, "request", "requests"),
                e.duration_ms
            );
            if e.partial {
                s.push_str(", partial");
            }
            registry(e.registry_id, s)
        }
        EventPayload::SyncFailed(e) => {
            registry(e.registry_id, format!("sync failed: {}", e.reason))
        }

        // ------------------------------------------------------------ images
        EventPayload::TagDiscovered(e) => {
            let mut s = format!(
                "tag {} discovered at {} ({}",
                e.tag,
                short(&e.digest),
                e.details.kind.as_str()
            );
            if let Some(m) = e.details.model_type {
                let _ = write!(s, " {m}");
            }
            let _ = write!(s, ", {})", size(e.details.size));
            let mut entry = image(e.registry_id, &e.repository, s);
            entry.tag = Some(e.tag.as_str().to_owned());
            entry.digest = Some(e.digest.as_str().to_owned());
            entry
        }
        EventPayload::TagMoved(e) => {
            let mut entry = image(
                e.registry_id,
                &e.repository,
                format!(
                    "tag {} moved from {} to {}",
                    e.tag,
                    short(&e.old_digest),
                    short(&e.new_digest)
                ),
            );
            entry.tag = Some(e.tag.as_str().to_owned());
            entry.digest = Some(e.new_digest.as_str().to_owned());
            entry
        }
        EventPayload::TagRemoved(e) => {
            let mut entry = image(
                e.registry_id,
                &e.repository,
                format!("tag {} removed (was {})", e.tag, short(&e.digest)),
            );
            entry.tag = Some(e.tag.as_str().to_owned());
            entry.digest = Some(e.digest.as_str().to_owned());
            entry
        }
        EventPayload::TagMutated(e) => {
            let mut s = format!(
                "immutable tag {} re-pushed: {} became {} (found by {}",
                e.tag,
                short(&e.old_digest),
                short(&e.new_digest),
                enum_str(&e.found_by)
            );
            if let Some(t) = e.seen_at {
                let _ = write!(s, ", seen {}", t.format("%Y-%m-%d %H:%M:%S UTC"));
            }
            s.push(')');
            let mut entry = image(e.registry_id, &e.repository, s);
            entry.tag = Some(e.tag.as_str().to_owned());
            entry.digest = Some(e.new_digest.as_str().to_owned());
            entry
        }
        EventPayload::PullsCounted(e) => {
            let mut entry = image(
                e.registry_id,
                &e.repository,
                format!(
                    "{} of {} from {} to {}",
                    plural(e.pulls, "pull", "pulls"),
                    e.tag
                        .as_ref()
                        .map_or_else(|| short(&e.digest).to_owned(), |t| t.to_string()),
                    e.first_pulled_at.format("%Y-%m-%d %H:%M:%S"),
                    e.last_pulled_at.format("%Y-%m-%d %H:%M:%S UTC")
                ),
            );
            entry.tag = e.tag.as_ref().map(|t| t.as_str().to_owned());
            entry.digest = Some(e.digest.as_str().to_owned());
            entry
        }
        EventPayload::SignatureVerified(e) => digest_entry(
            e.registry_id,
            &e.repository,
            &e.digest,
            format!(
                "{} signature verified, signer {}",
                enum_str(&e.kind),
                e.signer
            ),
        ),
        EventPayload::SignatureFailed(e) => digest_entry(
            e.registry_id,
            &e.repository,
            &e.digest,
            format!(
                "{} signature failed, signer {}: {}",
                enum_str(&e.kind),
                e.signer,
                e.reason
            ),
        ),
        EventPayload::VulnerabilitiesReported(e) => {
            let c = &e.counts;
            digest_entry(
                e.registry_id,
                &e.repository,
                &e.digest,
                format!(
                    "vulnerabilities reported by {} {}: {} critical, {} high, {} medium, {} low, {} unknown ({} fixable)",
                    e.scanner.name,
                    e.scanner.version,
                    c.critical,
                    c.high,
                    c.medium,
                    c.low,
                    c.unknown,
                    e.fixable
                ),
            )
        }
        EventPayload::SbomFound(e) => digest_entry(
            e.registry_id,
            &e.repository,
            &e.digest,
            format!("SBOM found ({})", enum_str(&e.format)),
        ),
        EventPayload::PolicyEvaluated(e) => {
            let mut s = format!("trust policy: {}", enum_str(&e.verdict));
            if !e.reasons.is_empty() {
                let reasons: Vec<String> = e.reasons.iter().map(enum_str).collect();
                let _ = write!(s, " ({})", reasons.join(", "));
            }
            digest_entry(e.registry_id, &e.repository, &e.digest, s)
        }
        EventPayload::ReferrersChanged(e) => digest_entry(
            e.registry_id,
            &e.repository,
            &e.digest,
            format!(
                "referrers changed: {}",
                plural(e.referrers.len() as u64, "referrer", "referrers")
            ),
        ),

        // ------------------------------------------------------------ curation
        EventPayload::CatalogLabeled(e) => target(&e.target, format!("HM tag {} added", e.hm_tag)),
        EventPayload::CatalogUnlabeled(e) => {
            target(&e.target, format!("HM tag {} removed", e.hm_tag))
        }
        EventPayload::CatalogReadmeSet(e) => target(
            &e.target,
            if e.readme.is_empty() {
                "README cleared".to_owned()
            } else {
                format!(
                    "README set ({})",
                    plural(e.readme.chars().count() as u64, "character", "characters")
                )
            },
        ),
        EventPayload::CatalogApproved(e) => {
            let mut entry = decision(&e.target, "approved", e.digest.as_ref(), &e.reason);
            entry.digest = e.digest.as_ref().map(|d| d.as_str().to_owned());
            entry
        }
        EventPayload::CatalogRejected(e) => {
            let mut entry = decision(&e.target, "rejected", e.digest.as_ref(), &e.reason);
            entry.digest = e.digest.as_ref().map(|d| d.as_str().to_owned());
            entry
        }

        // ------------------------------------------------------------ deployments
        EventPayload::DeploymentRequested(e) => Entry {
            summary: format!(
                "deployment {}/{} of {}:{} at {} requested ({}, {}, target {})",
                e.namespace,
                e.name,
                e.image.repository,
                e.image.tag,
                short(&e.digest),
                enum_str(&e.workload),
                plural(u64::from(e.replicas), "replica", "replicas"),
                enum_str(&e.target)
            ),
            registry_id: Some(e.image.registry_id.0),
            repository: Some(e.image.repository.as_str().to_owned()),
            tag: Some(e.image.tag.as_str().to_owned()),
            digest: Some(e.digest.as_str().to_owned()),
        },
        EventPayload::DeploymentRendered(e) => deployment(format!(
            "rendered {}",
            plural(e.manifests.len() as u64, "manifest", "manifests")
        )),
        EventPayload::DeploymentApplied(e) => deployment(format!(
            "applied to {} at {}",
            enum_str(&e.target),
            e.revision
        )),
        EventPayload::DeploymentFailed(e) => deployment(format!("failed: {}", e.reason)),
        EventPayload::DeploymentDeleted(e) => deployment(match &e.revision {
            Some(r) => format!("deleted at {r}"),
            None => "deleted".to_owned(),
        }),
        EventPayload::DeploymentPolicyViolated(e) => {
            let reasons: Vec<String> = e.reasons.iter().map(enum_str).collect();
            let mut entry = deployment(format!(
                "trust policy violated ({}) by {}: {}",
                enum_str(&e.stage),
                short(&e.digest),
                reasons.join(", ")
            ));
            entry.digest = Some(e.digest.as_str().to_owned());
            entry
        }

        // ------------------------------------------------------------ subscriptions
        EventPayload::SubscriptionCreated(e) => {
            let mut s = format!(
                "subscription created: {} for {}",
                origin(&e.url),
                e.types.join(", ")
            );
            if !e.description.is_empty() {
                let _ = write!(s, " ({})", e.description);
            }
            subscription(s)
        }
        EventPayload::SubscriptionRemoved(_) => subscription("subscription removed".into()),
        EventPayload::SubscriptionReplayRequested(e) => subscription(format!(
            "replay requested of {} to {}",
            e.from.to_rfc3339(),
            e.to.to_rfc3339()
        )),
    };
    e.summary = clip(std::mem::take(&mut e.summary));
    e
}

fn digest_entry(
    registry: RegistryId,
    repository: &RepositoryName,
    digest: &Digest,
    summary: String,
) -> Entry {
    let mut entry = image(registry, repository, summary);
    entry.digest = Some(digest.as_str().to_owned());
    entry
}

fn target(t: &imagelib_events::model::CatalogTarget, summary: String) -> Entry {
    let mut entry = image(t.registry_id, &t.repository, summary);
    entry.tag = t.tag.as_ref().map(|t| t.as_str().to_owned());
    entry
}

fn decision(
    t: &imagelib_events::model::CatalogTarget,
    what: &str,
    digest: Option<&Digest>,
    reason: &str,
) -> Entry {
    let mut s = what.to_owned();
    if let Some(d) = digest {
        let _ = write!(s, " at {}", short(d));
    }
    if !reason.is_empty() {
        let _ = write!(s, ": {reason}");
    }
    target(t, s)
}

/// A deployment event: its image is looked up when the batch is written.
fn deployment(summary: String) -> Entry {
    Entry {
        summary,
        ..Default::default()
    }
}

fn subscription(summary: String) -> Entry {
    Entry {
        summary,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imagelib_events::event::{RegistryRegistered, SubscriptionCreated};
    use imagelib_events::model::*;
    use imagelib_events::{RegistryId, SubscriptionId};

    fn sealed() -> SealedCredential {
        SealedCredential {
            key_id: "k1".into(),
            algorithm: "AES-256-GCM".into(),
            nonce: "bm9uY2U=".into(),
            ciphertext: "c2VjcmV0LXBhc3N3b3Jk".into(),
        }
    }

    #[test]
    fn secrets_never_reach_a_summary() {
        let g = RegistryId(Uuid::from_u128(1));
        let registered = describe(&EventPayload::RegistryRegistered(RegistryRegistered {
            registry_id: g,
            label: "Acme".into(),
            url: "harbor.acme.internal/ai".into(),
            registry_type: RegistryType::Harbor,
            insecure: false,
            auth_kind: AuthKind::Basic,
            credential: Some(sealed()),
            visibility: vec!["ml".into()],
            ca_pem: None,
            scan_interval_secs: None,
            repositories: vec![],
            webhook_secret: Some(sealed()),
            auth_hosts: vec![],
            report_pulls: false,
            proxy_url: None,
            no_proxy: Vec::new(),
            artifact_registry: None,
        }));
        assert_eq!(
            registered.summary,
            "registered \"Acme\" (harbor, harbor.acme.internal/ai), auth basic, visible to ml"
        );
        assert_eq!(registered.registry_id, Some(g.0));
        let created = describe(&EventPayload::SubscriptionCreated(SubscriptionCreated {
            subscription_id: SubscriptionId(Uuid::from_u128(2)),
            url: "https://hooks.example.com:8443/services/T0/B0/s3cr3tpath?token=abc".into(),
            types: vec!["io.imagelib.image.*".into()],
            secret: sealed(),
            description: "chat".into(),
        }));
        assert_eq!(
            created.summary,
            "subscription created: https://hooks.example.com:8443 for io.imagelib.image.* (chat)"
        );
        for s in [&registered.summary, &created.summary] {
            assert!(!s.contains("c2VjcmV0"), "{s}");
            assert!(!s.contains("s3cr3t") && !s.contains("token"), "{s}");
        }
    }

    #[test]
    fn links_are_derived_from_type_subject_and_object() {
        let g = Uuid::from_u128(7);
        assert_eq!(
            link("io.imagelib.sync.completed.v1", "registry/x", Some(g), None).unwrap(),
            format!("/v1/registries/{g}")
        );
        assert_eq!(
            link(
                "io.imagelib.rule.set.v1",
                &format!("registry/{g}/rules/nim"),
                Some(g),
                None
            )
            .unwrap(),
            format!("/v1/registries/{g}/rules/nim")
        );
        assert_eq!(
            link("io.imagelib.catalog.approved.v1", "x", Some(g), Some("a/b")).unwrap(),
            format!("/v1/repositories/{g}/a/b")
        );
        assert_eq!(
            link(
                "io.imagelib.deployment.applied.v1",
                "deployment/d1",
                Some(g),
                Some("a/b")
            )
            .unwrap(),
            "/v1/deployments/d1"
        );
        assert_eq!(
            link(
                "io.imagelib.subscription.removed.v1",
                "subscription/s1",
                None,
                None
            )
            .unwrap(),
            "/v1/subscriptions/s1"
        );
        assert_eq!(
            link("io.imagelib.image.tag_moved.v1", "x", None, None),
            None
        );
        assert_eq!(link("other", "x", Some(g), None), None);
    }

    #[test]
    fn summaries_are_clipped() {
        let long = clip("x".repeat(MAX_SUMMARY + 50));
        assert_eq!(long.chars().count(), MAX_SUMMARY);
        assert!(long.ends_with('…'));
        assert_eq!(
            short(&format!("sha256:{}", "ab".repeat(32)).parse().unwrap()),
            "sha256:abababababab"
        );
        assert_eq!(size(4_000_000_000), "4.0 GB");
        assert_eq!(size(812), "812 B");
        assert_eq!(origin("not a url"), "an unparsable URL");
    }
}
