//! Trust (issue 13): signatures, vulnerability reports, SBOMs, policy verdicts and
//! referrers, per (repository, digest), and each current tag version's view of them.
//!
//! Evidence is keyed by digest, not by tag, because it is attached to the manifest: every
//! tag pointing at a digest (now, or after a later move) shows it. The list filters need it
//! on the tag row, so each current version carries a composed copy (`signed`,
//! `max_severity`, `has_sbom`, `policy`, `trust`), recomputed whenever evidence of its
//! digest (or, for reports and SBOMs, of one of its platform manifests) changes and
//! whenever a version opens.
//!
//! Every evidence row is last-writer-wins by stream sequence (a report: newest
//! `scanned_at`, then sequence), so applying a run of image events as "tags first, then
//! evidence in stream order" gives the rows a strict stream-order replay gives: the tag
//! events' referrer lists go through the same sequence-guarded table as
//! `image.referrers_changed`.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use imagelib_events::model::{PolicyFinding, Referrer, SeverityCounts};
use imagelib_events::{Envelope, EventPayload, ImageId};
use serde::{Deserialize, Serialize};
use sqlx::{Postgres, Row, Transaction};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{enum_str, micros};

/// At most this many signatures and reports are shown per tag (the scanner bounds the
/// referrers it reads; this bounds what a long history of policies could add up to).
pub const MAX_LISTED: usize = 100;
/// At most this many referrers are kept per digest.
pub const MAX_REFERRERS: usize = 1000;
/// Longest signer, issuer or reason kept.
pub const MAX_TEXT: usize = 1024;

/// Severity levels as `tag_versions.max_severity` stores them.
pub const SEVERITIES: [&str; 5] = ["none", "low", "medium", "high", "critical"];

/// The level of a severity word (`none` 0 … `critical` 4).
pub fn severity_level(word: &str) -> Option<i16> {
    SEVERITIES.iter().position(|s| *s == word).map(|i| i as i16)
}

/// The highest severity of one report's counts (`unknown` is not a level).
fn highest(c: &SeverityCounts) -> i16 {
    if c.critical > 0 {
        4
    } else if c.high > 0 {
        3
    } else if c.medium > 0 {
        2
    } else if c.low > 0 {
        1
    } else {
        0
    }
}

/// A tag's trust, as the API shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TrustView {
    /// At least one signature of this digest verified.
    pub signed: bool,
    /// The latest outcome per signature referrer and policy rule, by source.
    pub signatures: Vec<SignatureView>,
    /// Findings of the counted reports (the newest per scanner, of the digest and of its
    /// platform manifests), summed; `null` without a report.
    pub vulnerabilities: Option<VulnerabilitiesView>,
    /// The highest severity found: `critical`, `high`, `medium`, `low`, `none`; `null`
    /// without a report. `unknown` findings do not count.
    pub max_severity: Option<String>,
    /// SBOM formats attached (`spdx`, `cyclonedx`) to the digest or a platform manifest.
    pub sbom: Vec<String>,
    /// The latest policy verdict of the digest.
    pub policy: Option<PolicyView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SignatureView {
    /// The signer's identity (keyless: certificate subject) or key id.
    pub signer: String,
    pub issuer: Option<String>,
    /// `cosign` or `notation`.
    pub kind: String,
    pub verified: bool,
    /// Why verification failed.
    pub reason: Option<String>,
    /// The digest of the signature referrer.
    pub source: String,
    /// The policy rule it was checked against.
    pub policy: Option<String>,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct VulnerabilitiesView {
    pub critical: i64,
    pub high: i64,
    pub medium: i64,
    pub low: i64,
    pub unknown: i64,
    pub fixable: i64,
    /// The newest counted report's scanner, database and scan time.
    pub scanner: String,
    pub scanner_version: String,
    pub db: String,
    pub scanned_at: DateTime<Utc>,
    /// Each counted report.
    pub reports: Vec<ReportView>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReportView {
    /// The digest the report is about (the tag's or a platform manifest's).
    pub digest: String,
    pub scanner: String,
    pub scanner_version: String,
    pub db: String,
    pub scanned_at: DateTime<Utc>,
    pub critical: i64,
    pub high: i64,
    pub medium: i64,
    pub low: i64,
    pub unknown: i64,
    pub fixable: i64,
    /// The digest of the report referrer.
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PolicyView {
    /// `pass`, `fail` or `audit`.
    pub verdict: String,
    pub reasons: Vec<String>,
    #[schema(value_type = Vec<Object>)]
    pub findings: Vec<PolicyFinding>,
    /// The rule whose policy was applied.
    pub rule: Option<String>,
    pub at: DateTime<Utc>,
}

/// Whether an event is trust evidence this module applies.
pub fn is_evidence(p: &EventPayload) -> bool {
    matches!(
        p,
        EventPayload::SignatureVerified(_)
            | EventPayload::SignatureFailed(_)
            | EventPayload::VulnerabilitiesReported(_)
            | EventPayload::SbomFound(_)
            | EventPayload::PolicyEvaluated(_)
            | EventPayload::ReferrersChanged(_)
    )
}

pub(crate) fn clip(s: &str) -> &str {
    if s.len() <= MAX_TEXT {
        return s;
    }
    let mut end = MAX_TEXT;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

pub(crate) fn referrers_json(list: &[Referrer]) -> serde_json::Value {
    serde_json::to_value(&list[..list.len().min(MAX_REFERRERS)])
        .unwrap_or_else(|_| serde_json::Value::Array(vec![]))
}

/// A digest evidence was recorded for.
pub(crate) type DigestKey = (Uuid, String);

/// Apply evidence events in stream order; returns the digests they touched.
pub(crate) async fn apply_evidence(
    tx: &mut Transaction<'_, Postgres>,
    events: &[(u64, &Envelope)],
) -> Result<Vec<DigestKey>, sqlx::Error> {
    let mut touched: Vec<DigestKey> = Vec::new();
    for (seq, env) in events {
        let seq = i64_of(*seq);
        let at = micros(env.time);
        let key = match &env.payload {
            EventPayload::SignatureVerified(e) => {
                let repo_id = ImageId::derive(e.registry_id, &e.repository).0;
                signature(
                    tx,
                    Signature {
                        repo_id,
                        digest: e.digest.as_str(),
                        source: e.source.as_str(),
                        policy: e.policy.as_ref().map(|p| p.as_str()),
                        signer: &e.signer,
                        issuer: e.issuer.as_deref(),
                        kind: enum_str(&e.kind),
                        verified: true,
                        reason: None,
                    },
                    at,
                    seq,
                )
                .await?;
                (repo_id, e.digest.as_str().to_owned())
            }
            EventPayload::SignatureFailed(e) => {
                let repo_id = ImageId::derive(e.registry_id, &e.repository).0;
                signature(
                    tx,
                    Signature {
                        repo_id,
                        digest: e.digest.as_str(),
                        source: e.source.as_str(),
                        policy: e.policy.as_ref().map(|p| p.as_str()),
                        signer: &e.signer,
                        issuer: e.issuer.as_deref(),
                        kind: enum_str(&e.kind),
                        verified: false,
                        reason: Some(&e.reason),
                    },
                    at,
                    seq,
                )
                .await?;
                (repo_id, e.digest.as_str().to_owned())
            }
            EventPayload::VulnerabilitiesReported(e) => {
                let repo_id = ImageId::derive(e.registry_id, &e.repository).0;
                sqlx::query(
                    "INSERT INTO trust_reports (repo_id, digest, scanner, scanner_version, db, scanned_at,
                        critical, high, medium, low, unknown, fixable, source, sequence)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
                     ON CONFLICT (repo_id, digest, scanner) DO UPDATE SET
                        scanner_version = EXCLUDED.scanner_version, db = EXCLUDED.db,
                        scanned_at = EXCLUDED.scanned_at, critical = EXCLUDED.critical,
                        high = EXCLUDED.high, medium = EXCLUDED.medium, low = EXCLUDED.low,
                        unknown = EXCLUDED.unknown, fixable = EXCLUDED.fixable,
                        source = EXCLUDED.source, sequence = EXCLUDED.sequence
                     WHERE (trust_reports.scanned_at, trust_reports.sequence)
                         < (EXCLUDED.scanned_at, EXCLUDED.sequence)",
                )
                .bind(repo_id)
                .bind(e.digest.as_str())
                .bind(clip(&e.scanner.name))
                .bind(clip(&e.scanner.version))
                .bind(clip(&e.db))
                .bind(micros(e.scanned_at))
                .bind(i64_of(e.counts.critical))
                .bind(i64_of(e.counts.high))
                .bind(i64_of(e.counts.medium))
                .bind(i64_of(e.counts.low))
                .bind(i64_of(e.counts.unknown))
                .bind(i64_of(e.fixable))
                .bind(e.source.as_str())
                .bind(seq)
                .execute(&mut **tx)
                .await?;
                (repo_id, e.digest.as_str().to_owned())
            }
            EventPayload::SbomFound(e) => {
                let repo_id = ImageId::derive(e.registry_id, &e.repository).0;
                sqlx::query(
                    "INSERT INTO trust_sboms (repo_id, digest, source, format, sequence)
                     VALUES ($1, $2, $3, $4, $5)
                     ON CONFLICT (repo_id, digest, source) DO UPDATE SET
                        format = EXCLUDED.format, sequence = EXCLUDED.sequence
                     WHERE trust_sboms.sequence < EXCLUDED.sequence",
                )
                .bind(repo_id)
                .bind(e.digest.as_str())
                .bind(e.source.as_str())
                .bind(enum_str(&e.format))
                .bind(seq)
                .execute(&mut **tx)
                .await?;
                (repo_id, e.digest.as_str().to_owned())
            }
            EventPayload::PolicyEvaluated(e) => {
                let repo_id = ImageId::derive(e.registry_id, &e.repository).0;
                let mut seen = HashSet::new();
                let mut reasons: Vec<String> = e.reasons.iter().map(enum_str).collect();
                reasons.retain(|r| seen.insert(r.clone()));
                reasons.truncate(imagelib_events::model::PolicyReason::ALL.len());
                let findings: Vec<PolicyFinding> = e
                    .findings
                    .iter()
                    .take(MAX_LISTED)
                    .map(|f| PolicyFinding {
                        reason: f.reason,
                        detail: clip(&f.detail).to_owned(),
                    })
                    .collect();
                sqlx::query(
                    "INSERT INTO trust_policies (repo_id, digest, verdict, reasons, findings, policy, at, sequence)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (repo_id, digest) DO UPDATE SET verdict = EXCLUDED.verdict,
                        reasons = EXCLUDED.reasons, findings = EXCLUDED.findings,
                        policy = EXCLUDED.policy, at = EXCLUDED.at, sequence = EXCLUDED.sequence
                     WHERE trust_policies.sequence < EXCLUDED.sequence",
                )
                .bind(repo_id)
                .bind(e.digest.as_str())
                .bind(enum_str(&e.verdict))
                .bind(&reasons)
                .bind(serde_json::to_value(&findings).unwrap_or_default())
                .bind(e.policy.as_ref().map(|p| p.as_str()))
                .bind(at)
                .bind(seq)
                .execute(&mut **tx)
                .await?;
                (repo_id, e.digest.as_str().to_owned())
            }
            EventPayload::ReferrersChanged(e) => {
                let repo_id = ImageId::derive(e.registry_id, &e.repository).0;
                upsert_referrers(
                    tx,
                    &[repo_id],
                    &[e.digest.as_str()],
                    &[referrers_json(&e.referrers)],
                    &[seq],
                    true,
                )
                .await?;
                // Evidence whose referrer is gone from the registry goes with it.
                let sources: Vec<&str> = e
                    .referrers
                    .iter()
                    .take(MAX_REFERRERS)
                    .map(|r| r.digest.as_str())
                    .collect();
                sqlx::query(
                    "WITH s AS (DELETE FROM trust_signatures WHERE repo_id = $1 AND digest = $2
                                  AND sequence < $3 AND NOT (source = ANY($4))),
                          r AS (DELETE FROM trust_reports WHERE repo_id = $1 AND digest = $2
                                  AND sequence < $3 AND NOT (source = ANY($4)))
                     DELETE FROM trust_sboms WHERE repo_id = $1 AND digest = $2
                        AND sequence < $3 AND NOT (source = ANY($4))",
                )
                .bind(repo_id)
                .bind(e.digest.as_str())
                .bind(seq)
                .bind(&sources)
                .execute(&mut **tx)
                .await?;
                (repo_id, e.digest.as_str().to_owned())
            }
            _ => continue,
        };
        touched.push(key);
    }
    touched.sort();
    touched.dedup();
    Ok(touched)
}

struct Signature<'a> {
    repo_id: Uuid,
    digest: &'a str,
    source: &'a str,
    policy: Option<&'a str>,
    signer: &'a str,
    issuer: Option<&'a str>,
    kind: String,
    verified: bool,
    reason: Option<&'a str>,
}

async fn signature(
    tx: &mut Transaction<'_, Postgres>,
    s: Signature<'_>,
    at: DateTime<Utc>,
    seq: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO trust_signatures (repo_id, digest, source, policy, signer, issuer, kind,
            verified, reason, at, sequence)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
         ON CONFLICT (repo_id, digest, source, policy) DO UPDATE SET signer = EXCLUDED.signer,
            issuer = EXCLUDED.issuer, kind = EXCLUDED.kind, verified = EXCLUDED.verified,
            reason = EXCLUDED.reason, at = EXCLUDED.at, sequence = EXCLUDED.sequence
         WHERE trust_signatures.sequence < EXCLUDED.sequence",
    )
    .bind(s.repo_id)
    .bind(s.digest)
    .bind(s.source)
    .bind(s.policy.unwrap_or(""))
    .bind(clip(s.signer))
    .bind(s.issuer.map(clip))
    .bind(s.kind)
    .bind(s.verified)
    .bind(s.reason.map(clip))
    .bind(at)
    .bind(seq)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Record referrer lists (last writer by sequence wins). A tag event's empty list only
/// overrides a list already recorded, so catalogs without referrers keep no rows.
async fn upsert_referrers(
    tx: &mut Transaction<'_, Postgres>,
    repo_ids: &[Uuid],
    digests: &[&str],
    lists: &[serde_json::Value],
    seqs: &[i64],
    sync: bool,
) -> Result<(), sqlx::Error> {
    if repo_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO trust_referrers (repo_id, digest, referrers, sequence)
         SELECT u.repo_id, u.digest, u.referrers, u.sequence
         FROM UNNEST($1::uuid[], $2::text[], $3::jsonb[], $4::int8[]) AS u(repo_id, digest, referrers, sequence)
         WHERE u.referrers <> '[]'::jsonb OR EXISTS (
            SELECT 1 FROM trust_referrers x WHERE x.repo_id = u.repo_id AND x.digest = u.digest)
         ON CONFLICT (repo_id, digest) DO UPDATE SET referrers = EXCLUDED.referrers,
            sequence = EXCLUDED.sequence
         WHERE trust_referrers.sequence < EXCLUDED.sequence",
    )
    .bind(repo_ids)
    .bind(digests)
    .bind(lists)
    .bind(seqs)
    .execute(&mut **tx)
    .await?;
    if sync {
        sync_listed(tx, repo_ids, digests).await?;
    }
    Ok(())
}

/// The current versions at these digests show the recorded list (those opened or refreshed
/// in this run too). Each digest's versions are found through `tag_versions_digest` (the
/// lateral join keeps the planner from scanning the table for a batch of digests).
async fn sync_listed(
    tx: &mut Transaction<'_, Postgres>,
    repo_ids: &[Uuid],
    digests: &[&str],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE tag_versions t SET listed_referrers = v.referrers
         FROM (SELECT c.repo_id, c.tag, x.referrers
               FROM (SELECT DISTINCT * FROM UNNEST($1::uuid[], $2::text[])) AS k(repo_id, digest)
               JOIN trust_referrers x ON x.repo_id = k.repo_id AND x.digest = k.digest
               CROSS JOIN LATERAL (
                   SELECT c.repo_id, c.tag FROM tag_versions c
                   WHERE c.repo_id = k.repo_id AND c.digest = k.digest AND c.valid_to IS NULL
                     AND c.listed_referrers IS DISTINCT FROM x.referrers) c) v
         WHERE t.repo_id = v.repo_id AND t.tag = v.tag AND t.valid_to IS NULL",
    )
    .bind(repo_ids)
    .bind(digests)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Every current version shows its digest's recorded list: what a bulk replay, which skips
/// the per-batch sync, does once at the end ([`crate::projection::Projection::flush_deferred`]).
pub(crate) async fn sync_all_listed(tx: &mut Transaction<'_, Postgres>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE tag_versions t SET listed_referrers = x.referrers
         FROM trust_referrers x
         WHERE x.repo_id = t.repo_id AND x.digest = t.digest AND t.valid_to IS NULL
           AND t.listed_referrers IS DISTINCT FROM x.referrers",
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The referrer lists tag events carried: (repo, digest, list, sequence), the last per
/// digest of a run. The API reads the recorded list for every tag at the digest.
pub(crate) async fn record_tag_referrers(
    tx: &mut Transaction<'_, Postgres>,
    seen: &[(Uuid, &str, &[Referrer], u64)],
    sync: bool,
) -> Result<(), sqlx::Error> {
    let mut last: HashMap<(Uuid, &str), (&[Referrer], u64)> = HashMap::new();
    for (repo_id, digest, list, seq) in seen {
        let e = last.entry((*repo_id, *digest)).or_insert((list, *seq));
        if *seq >= e.1 {
            *e = (list, *seq);
        }
    }
    let mut ids = Vec::with_capacity(last.len());
    let mut digests = Vec::with_capacity(last.len());
    let mut lists = Vec::with_capacity(last.len());
    let mut seqs = Vec::with_capacity(last.len());
    for ((repo_id, digest), (list, seq)) in last {
        ids.push(repo_id);
        digests.push(digest);
        lists.push(referrers_json(list));
        seqs.push(i64_of(seq));
    }
    upsert_referrers(tx, &ids, &digests, &lists, &seqs, sync).await?;
    Ok(())
}

/// A current tag version whose trust is to be composed.
#[derive(Debug, Clone)]
pub(crate) struct VersionKey {
    pub(crate) repo_id: Uuid,
    pub(crate) tag: String,
    pub(crate) digest: String,
    pub(crate) platforms: Vec<String>,
}

fn platform_digests(platforms_json: &str) -> Vec<String> {
    #[derive(Deserialize)]
    struct P {
        digest: Option<String>,
    }
    serde_json::from_str::<Vec<P>>(platforms_json)
        .map(|v| v.into_iter().filter_map(|p| p.digest).collect())
        .unwrap_or_default()
}

/// Recompose the trust of every current version at (or with a platform manifest at) the
/// touched digests.
pub(crate) async fn refresh_digests(
    tx: &mut Transaction<'_, Postgres>,
    touched: &[DigestKey],
) -> Result<(), sqlx::Error> {
    if touched.is_empty() {
        return Ok(());
    }
    // One pass over the current tags of the touched repositories (not one per digest):
    // a digest may be a tag's or a platform manifest's, which no index says.
    let mut repos: Vec<Uuid> = touched.iter().map(|k| k.0).collect();
    repos.sort_unstable();
    repos.dedup();
    let mut digests: Vec<&str> = touched.iter().map(|k| k.1.as_str()).collect();
    digests.sort_unstable();
    digests.dedup();
    let rows = sqlx::query(
        "SELECT t.repo_id, t.tag, t.digest, t.platforms::text
         FROM tag_versions t
         WHERE t.repo_id = ANY($1) AND t.valid_to IS NULL
           AND (t.digest = ANY($2)
                OR jsonb_path_query_array(t.platforms, '$[*].digest') ?| $2)",
    )
    .bind(&repos)
    .bind(&digests)
    .fetch_all(&mut **tx)
    .await?;
    let wanted: HashSet<(Uuid, &str)> = touched.iter().map(|(r, d)| (*r, d.as_str())).collect();
    let mut versions = Vec::with_capacity(rows.len());
    for row in rows {
        let platforms: String = row.try_get(3)?;
        let v = VersionKey {
            repo_id: row.try_get(0)?,
            tag: row.try_get(1)?,
            digest: row.try_get(2)?,
            platforms: platform_digests(&platforms),
        };
        let hit = std::iter::once(&v.digest)
            .chain(&v.platforms)
            .any(|d| wanted.contains(&(v.repo_id, d.as_str())));
        if hit {
            versions.push(v);
        }
    }
    compose(tx, &versions).await
}

/// Compose the trust of versions just opened, when any evidence of their digests exists
/// (one probe; nothing more for a catalog without trust data).
pub(crate) async fn refresh_new(
    tx: &mut Transaction<'_, Postgres>,
    versions: Vec<VersionKey>,
) -> Result<(), sqlx::Error> {
    if versions.is_empty() {
        return Ok(());
    }
    let (ids, digests) = keys_of(&versions, true);
    let hits: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT k.repo_id, k.digest FROM UNNEST($1::uuid[], $2::text[]) AS k(repo_id, digest)
         WHERE EXISTS (SELECT 1 FROM trust_signatures x WHERE x.repo_id = k.repo_id AND x.digest = k.digest)
            OR EXISTS (SELECT 1 FROM trust_reports x WHERE x.repo_id = k.repo_id AND x.digest = k.digest)
            OR EXISTS (SELECT 1 FROM trust_sboms x WHERE x.repo_id = k.repo_id AND x.digest = k.digest)
            OR EXISTS (SELECT 1 FROM trust_policies x WHERE x.repo_id = k.repo_id AND x.digest = k.digest)",
    )
    .bind(&ids)
    .bind(&digests)
    .fetch_all(&mut **tx)
    .await?;
    if hits.is_empty() {
        return Ok(());
    }
    let hits: HashSet<(Uuid, String)> = hits.into_iter().collect();
    let chosen: Vec<VersionKey> = versions
        .into_iter()
        .filter(|v| {
            std::iter::once(&v.digest)
                .chain(&v.platforms)
                .any(|d| hits.contains(&(v.repo_id, d.clone())))
        })
        .collect();
    compose(tx, &chosen).await
}

fn keys_of(versions: &[VersionKey], with_platforms: bool) -> (Vec<Uuid>, Vec<String>) {
    let mut set: BTreeSet<(Uuid, &str)> = BTreeSet::new();
    for v in versions {
        set.insert((v.repo_id, v.digest.as_str()));
        if with_platforms {
            for p in &v.platforms {
                set.insert((v.repo_id, p.as_str()));
            }
        }
    }
    set.into_iter().map(|(r, d)| (r, d.to_owned())).unzip()
}

#[derive(Default)]
struct Evidence {
    signatures: Vec<SignatureView>,
    reports: Vec<(ReportView, i16)>,
    sboms: BTreeSet<String>,
    policy: Option<PolicyView>,
}

/// Load the evidence of the versions' digests, compose each version's trust and write it.
async fn compose(
    tx: &mut Transaction<'_, Postgres>,
    versions: &[VersionKey],
) -> Result<(), sqlx::Error> {
    if versions.is_empty() {
        return Ok(());
    }
    let (ids, digests) = keys_of(versions, true);
    let mut ev: HashMap<(Uuid, String), Evidence> = HashMap::new();

    let rows = sqlx::query(
        "SELECT s.repo_id, s.digest, s.signer, s.issuer, s.kind, s.verified, s.reason, s.source,
                s.policy, s.at
         FROM UNNEST($1::uuid[], $2::text[]) AS k(repo_id, digest)
         JOIN trust_signatures s ON s.repo_id = k.repo_id AND s.digest = k.digest
         ORDER BY s.repo_id, s.digest, s.source, s.policy",
    )
    .bind(&ids)
    .bind(&digests)
    .fetch_all(&mut **tx)
    .await?;
    for r in rows {
        let policy: String = r.try_get(8)?;
        ev.entry((r.try_get(0)?, r.try_get(1)?))
            .or_default()
            .signatures
            .push(SignatureView {
                signer: r.try_get(2)?,
                issuer: r.try_get(3)?,
                kind: r.try_get(4)?,
                verified: r.try_get(5)?,
                reason: r.try_get(6)?,
                source: r.try_get(7)?,
                policy: (!policy.is_empty()).then_some(policy),
                at: r.try_get(9)?,
            });
    }

    let rows = sqlx::query(
        "SELECT s.repo_id, s.digest, s.scanner, s.scanner_version, s.db, s.scanned_at, s.critical,
                s.high, s.medium, s.low, s.unknown, s.fixable, s.source
         FROM UNNEST($1::uuid[], $2::text[]) AS k(repo_id, digest)
         JOIN trust_reports s ON s.repo_id = k.repo_id AND s.digest = k.digest
         ORDER BY s.repo_id, s.digest, s.scanner",
    )
    .bind(&ids)
    .bind(&digests)
    .fetch_all(&mut **tx)
    .await?;
    for r in rows {
        let report = ReportView {
            digest: r.try_get(1)?,
            scanner: r.try_get(2)?,
            scanner_version: r.try_get(3)?,
            db: r.try_get(4)?,
            scanned_at: r.try_get(5)?,
            critical: r.try_get(6)?,
            high: r.try_get(7)?,
            medium: r.try_get(8)?,
            low: r.try_get(9)?,
            unknown: r.try_get(10)?,
            fixable: r.try_get(11)?,
            source: r.try_get(12)?,
        };
        let level = highest(&SeverityCounts {
            critical: report.critical.max(0) as u64,
            high: report.high.max(0) as u64,
            medium: report.medium.max(0) as u64,
            low: report.low.max(0) as u64,
            unknown: 0,
        });
        ev.entry((r.try_get(0)?, report.digest.clone()))
            .or_default()
            .reports
            .push((report, level));
    }

    let rows: Vec<(Uuid, String, String)> = sqlx::query_as(
        "SELECT s.repo_id, s.digest, s.format
         FROM UNNEST($1::uuid[], $2::text[]) AS k(repo_id, digest)
         JOIN trust_sboms s ON s.repo_id = k.repo_id AND s.digest = k.digest",
    )
    .bind(&ids)
    .bind(&digests)
    .fetch_all(&mut **tx)
    .await?;
    for (repo_id, digest, format) in rows {
        ev.entry((repo_id, digest))
            .or_default()
            .sboms
            .insert(format);
    }

    let rows = sqlx::query(
        "SELECT s.repo_id, s.digest, s.verdict, s.reasons, s.findings, s.policy, s.at
         FROM UNNEST($1::uuid[], $2::text[]) AS k(repo_id, digest)
         JOIN trust_policies s ON s.repo_id = k.repo_id AND s.digest = k.digest",
    )
    .bind(&ids)
    .bind(&digests)
    .fetch_all(&mut **tx)
    .await?;
    for r in rows {
        let findings: serde_json::Value = r.try_get(4)?;
        ev.entry((r.try_get(0)?, r.try_get(1)?)).or_default().policy = Some(PolicyView {
            verdict: r.try_get(2)?,
            reasons: r.try_get(3)?,
            findings: serde_json::from_value(findings).unwrap_or_default(),
            rule: r.try_get(5)?,
            at: r.try_get(6)?,
        });
    }

    let n = versions.len();
    let mut repo_ids = Vec::with_capacity(n);
    let mut tags = Vec::with_capacity(n);
    let mut signed = Vec::with_capacity(n);
    let mut severity: Vec<Option<i16>> = Vec::with_capacity(n);
    let mut has_sbom = Vec::with_capacity(n);
    let mut policy: Vec<Option<String>> = Vec::with_capacity(n);
    let mut trust = Vec::with_capacity(n);
    let empty = Evidence::default();
    for v in versions {
        let own = ev.get(&(v.repo_id, v.digest.clone())).unwrap_or(&empty);
        let mut view = TrustView {
            signed: own.signatures.iter().any(|s| s.verified),
            signatures: own.signatures.iter().take(MAX_LISTED).cloned().collect(),
            policy: own.policy.clone(),
            ..Default::default()
        };
        let mut reports: Vec<&(ReportView, i16)> = Vec::new();
        let mut formats: BTreeSet<&str> = BTreeSet::new();
        let mut seen: BTreeSet<&str> = BTreeSet::new();
        for d in std::iter::once(&v.digest).chain(&v.platforms) {
            if !seen.insert(d.as_str()) {
                continue;
            }
            if let Some(e) = ev.get(&(v.repo_id, d.clone())) {
                reports.extend(e.reports.iter());
                formats.extend(e.sboms.iter().map(String::as_str));
            }
        }
        view.sbom = formats.into_iter().map(str::to_owned).collect();
        let level = reports.iter().map(|(_, l)| *l).max();
        view.max_severity = level.map(|l| SEVERITIES[l.clamp(0, 4) as usize].to_owned());
        if let Some((newest, _)) = reports
            .iter()
            .max_by(|a, b| (a.0.scanned_at, &a.0.digest).cmp(&(b.0.scanned_at, &b.0.digest)))
        {
            let sum = |f: fn(&ReportView) -> i64| {
                reports
                    .iter()
                    .fold(0i64, |acc, (r, _)| acc.saturating_add(f(r)))
            };
            view.vulnerabilities = Some(VulnerabilitiesView {
                critical: sum(|r| r.critical),
                high: sum(|r| r.high),
                medium: sum(|r| r.medium),
                low: sum(|r| r.low),
                unknown: sum(|r| r.unknown),
                fixable: sum(|r| r.fixable),
                scanner: newest.scanner.clone(),
                scanner_version: newest.scanner_version.clone(),
                db: newest.db.clone(),
                scanned_at: newest.scanned_at,
                reports: reports
                    .iter()
                    .take(MAX_LISTED)
                    .map(|(r, _)| r.clone())
                    .collect(),
            });
        }
        repo_ids.push(v.repo_id);
        tags.push(v.tag.as_str());
        signed.push(view.signed);
        severity.push(level);
        has_sbom.push(!view.sbom.is_empty());
        policy.push(view.policy.as_ref().map(|p| p.verdict.clone()));
        // Nothing known is stored as nothing, however it came to be composed.
        trust.push(
            (view != TrustView::default())
                .then(|| serde_json::to_value(&view).ok())
                .flatten(),
        );
    }
    sqlx::query(
        "UPDATE tag_versions t SET signed = u.signed, max_severity = u.severity,
            has_sbom = u.has_sbom, policy = u.policy, trust = u.trust
         FROM UNNEST($1::uuid[], $2::text[], $3::bool[], $4::int2[], $5::bool[], $6::text[],
                     $7::jsonb[])
              AS u(repo_id, tag, signed, severity, has_sbom, policy, trust)
         WHERE t.repo_id = u.repo_id AND t.tag = u.tag AND t.valid_to IS NULL",
    )
    .bind(&repo_ids)
    .bind(&tags)
    .bind(&signed)
    .bind(&severity)
    .bind(&has_sbom)
    .bind(&policy)
    .bind(&trust)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn severities_rank_and_unknown_is_not_a_level() {
        assert_eq!(severity_level("none"), Some(0));
        assert_eq!(severity_level("critical"), Some(4));
        assert_eq!(severity_level("unknown"), None);
        let c = SeverityCounts {
            unknown: 7,
            ..Default::default()
        };
        assert_eq!(highest(&c), 0);
        let c = SeverityCounts {
            low: 1,
            high: 2,
            ..Default::default()
        };
        assert_eq!(highest(&c), 3);
    }

    #[test]
    fn platform_digests_are_read_from_the_platforms_column() {
        let p = r#"[{"os":"linux","architecture":"amd64","digest":"sha256:aa"},{"os":"linux","architecture":"arm64"}]"#;
        assert_eq!(platform_digests(p), vec!["sha256:aa".to_owned()]);
        assert!(platform_digests("not json").is_empty());
    }

    #[test]
    fn clip_keeps_char_boundaries() {
        let s = "é".repeat(MAX_TEXT);
        assert!(clip(&s).len() <= MAX_TEXT);
        assert_eq!(clip("short"), "short");
    }
}
