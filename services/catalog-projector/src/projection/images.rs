//! `image.*` events, folded per tag and written set-wise.
//!
//! Semantics (tolerant of duplicates and of events arriving for tags the catalog does not
//! know):
//! - `tag_discovered` / `tag_moved` to digest D: if the tag's current version is at D,
//!   it is refreshed (last seen, details); otherwise the current version (if any) is closed
//!   at the event time and a new one opens at D. A move of an unknown tag opens it.
//! - `tag_removed`: the current version (if any) is closed; removing an unknown tag is a
//!   no-op.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use imagelib_events::model::ImageDetails;
use imagelib_events::{Envelope, EventPayload, ImageId, RegistryId, RepositoryName};
use sqlx::{Postgres, Row, Transaction};
use uuid::Uuid;

use super::{RulesCtx, micros};
use crate::copy::{BinaryRows, CopyBuf, CopyRow, array_literal};

/// The OCI annotation (or label) a repository's fallback description comes from.
pub const DESCRIPTION_KEY: &str = "org.opencontainers.image.description";

/// The columns `COPY` writes, in order.
const VERSION_COLUMNS: &str = "repo_id, tag, sequence, registry_id, repository, digest, valid_from, valid_to, \
     first_seen, last_seen, media_type, artifact_type, kind, model_type, archs, platforms, size, created, \
     labels, annotations, extensions, referrers, hm_tags, approval, listed_referrers";

/// Bytes of `COPY` data encoded before they are sent.
const COPY_CHUNK: usize = 128 * 1024;

/// The registry and repository of a tag event (discovered, moved, removed); `None` for
/// any other event.
pub(crate) fn tag_event_repository(p: &EventPayload) -> Option<(RegistryId, &RepositoryName)> {
    match p {
        EventPayload::TagDiscovered(e) => Some((e.registry_id, &e.repository)),
        EventPayload::TagMoved(e) => Some((e.registry_id, &e.repository)),
        EventPayload::TagRemoved(e) => Some((e.registry_id, &e.repository)),
        _ => None,
    }
}

/// A tag's current version, as far as folding needs it.
#[derive(Debug, Clone)]
pub(crate) struct Current {
    /// The stream sequence of the event that opened it.
    pub(crate) sequence: u64,
    pub(crate) digest: String,
    pub(crate) kind: String,
    pub(crate) first_seen: DateTime<Utc>,
}

/// Where a tag's current version lives while folding.
#[derive(Clone, Copy)]
enum Origin {
    Db,
    New(usize),
}

struct TagState<'a> {
    repo_id: Uuid,
    tag: &'a str,
    before: Option<Current>,
    /// The current version after the events so far.
    now: Option<(Origin, String, DateTime<Utc>)>,
    /// The refreshed details of the database's current version.
    touch: Option<(DateTime<Utc>, &'a ImageDetails)>,
    /// When the database's current version closes.
    close: Option<DateTime<Utc>>,
}

/// A tag version to insert.
#[derive(Debug, Clone)]
pub struct NewVersion<'a> {
    pub repo_id: Uuid,
    pub registry_id: RegistryId,
    pub repository: &'a RepositoryName,
    pub tag: &'a str,
    pub sequence: u64,
    pub digest: &'a str,
    pub valid_from: DateTime<Utc>,
    pub valid_to: Option<DateTime<Utc>>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub details: &'a ImageDetails,
}

/// `COPY tag_versions (…) FROM STDIN`, the columns [`encode_version`] writes.
pub fn copy_statement() -> String {
    format!("COPY tag_versions ({VERSION_COLUMNS}) FROM STDIN")
}

/// One `tag_versions` row in COPY text format.
pub fn encode_version(
    buf: &mut CopyBuf,
    v: &NewVersion<'_>,
    hm_tags: &[&str],
    approval: Option<&str>,
) {
    encode_version_into(buf, v, hm_tags, approval);
}

/// Fields of a `tag_versions` row as [`encode_version_into`] writes it.
const VERSION_FIELDS: i16 = 25;

/// `COPY tag_versions (…) FROM STDIN (FORMAT binary)`, the columns
/// [`encode_version_binary`] writes.
pub fn binary_copy_statement() -> String {
    format!("COPY tag_versions ({VERSION_COLUMNS}) FROM STDIN (FORMAT binary)")
}

/// Where a row's fields that a later close changes lie in the buffer it was written to:
/// `valid_to` and `listed_referrers` (the last field).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CloseFields {
    pub valid_to: (usize, usize),
    pub listed: usize,
}

/// One `tag_versions` row in binary COPY format: the same values as [`encode_version`].
pub fn encode_version_binary(
    buf: &mut BinaryRows,
    v: &NewVersion<'_>,
    hm_tags: &[&str],
    approval: Option<&str>,
) -> CloseFields {
    encode_version_into(buf, v, hm_tags, approval)
}

/// The columns of [`VERSION_COLUMNS`], in either format.
fn encode_version_into<R: CopyRow>(
    buf: &mut R,
    v: &NewVersion<'_>,
    hm_tags: &[&str],
    approval: Option<&str>,
) -> CloseFields {
    let d = v.details;
    // A current version opened with a list shows it as recorded for its digest (the
    // newest list of the digest in stream order); the other cases are set by the lists'
    // sync (`trust::record_tag_referrers`), which then finds nothing left to write for
    // most versions.
    let listed = (v.valid_to.is_none() && !d.referrers.is_empty())
        .then(|| super::trust::referrers_json(&d.referrers).to_string());
    buf.begin_row(VERSION_FIELDS);
    buf.put_uuid(v.repo_id);
    buf.put_text(v.tag);
    buf.put_int8(v.sequence as i64);
    buf.put_uuid(v.registry_id.0);
    buf.put_text(v.repository.as_str());
    buf.put_text(v.digest);
    buf.put_time(v.valid_from);
    let valid_to_at = buf.written();
    buf.put_opt_time(v.valid_to);
    let valid_to = (valid_to_at, buf.written());
    buf.put_time(v.first_seen);
    buf.put_time(v.last_seen);
    buf.put_text(&d.media_type);
    buf.put_opt_text(d.artifact_type.as_deref());
    buf.put_text(d.kind.as_str());
    buf.put_opt_text(d.model_type.map(|m| m.as_str()));
    let archs = archs_of(d);
    buf.put_text_array(&archs.iter().map(String::as_str).collect::<Vec<_>>());
    buf.put_jsonb(&json(&d.platforms));
    buf.put_int8(i64::try_from(d.size).unwrap_or(i64::MAX));
    buf.put_opt_time(d.created.map(micros));
    buf.put_jsonb(&json(&d.labels));
    buf.put_jsonb(&json(&d.annotations));
    buf.put_jsonb(&json(&d.extensions));
    buf.put_jsonb(&json(&d.referrers));
    buf.put_text_array(hm_tags);
    buf.put_opt_text(approval);
    let listed_at = buf.written();
    buf.put_opt_jsonb(listed.as_deref());
    buf.finish_row();
    CloseFields {
        valid_to,
        listed: listed_at,
    }
}

#[derive(Default)]
struct RepoAgg<'a> {
    registry_id: Option<RegistryId>,
    name: Option<&'a RepositoryName>,
    first_seen: Option<DateTime<Utc>>,
    updated_at: Option<DateTime<Utc>>,
    /// The details of the latest version opened or refreshed (by sequence).
    latest: Option<(u64, &'a ImageDetails)>,
    total: i32,
    database: i32,
    model: i32,
}

fn kind_delta(agg: &mut RepoAgg<'_>, kind: &str, d: i32) {
    agg.total += d;
    match kind {
        "database" => agg.database += d,
        "model" => agg.model += d,
        _ => {}
    }
}

pub(crate) fn description_of(d: &ImageDetails) -> Option<&str> {
    d.annotations
        .get(DESCRIPTION_KEY)
        .or_else(|| d.labels.get(DESCRIPTION_KEY))
        .map(String::as_str)
}

pub(crate) fn archs_of(d: &ImageDetails) -> Vec<String> {
    let mut a: Vec<String> = d
        .platforms
        .iter()
        .map(|p| p.architecture.clone())
        .filter(|a| !a.is_empty() && a != "unknown")
        .collect();
    a.sort();
    a.dedup();
    a
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// The effective approval of a tag at `digest`: the tag's own decision when it was made
/// for this digest (or for any), else the repository's.
pub(crate) fn effective_approval<'a>(
    tag_decision: Option<(&'a str, Option<&str>)>,
    repo_decision: Option<&'a str>,
    digest: &str,
) -> Option<&'a str> {
    match tag_decision {
        Some((decision, pinned)) if pinned.is_none_or(|p| p == digest) => Some(decision),
        _ => repo_decision,
    }
}

/// The SQL twin of [`effective_approval`] for the current versions matched by `filter`.
pub(crate) const RECOMPUTE_APPROVAL: &str = "UPDATE tag_versions t SET approval = (
        SELECT CASE WHEN ta.decision IS NOT NULL AND (ta.digest IS NULL OR ta.digest = t.digest)
                    THEN ta.decision ELSE ra.decision END
        FROM (SELECT 1) one
        LEFT JOIN approvals ta ON ta.repo_id = t.repo_id AND ta.tag = t.tag
        LEFT JOIN approvals ra ON ra.repo_id = t.repo_id AND ra.tag = '')
    WHERE t.repo_id = $1 AND t.valid_to IS NULL AND ($2::text IS NULL OR t.tag = $2)";

/// Apply a run of image events (in stream order) within `tx`.
pub(crate) async fn flush(
    tx: &mut Transaction<'_, Postgres>,
    events: &[(u64, &Envelope)],
    rules: &mut RulesCtx<'_>,
) -> Result<(), sqlx::Error> {
    // Keys, in first-seen order.
    let mut index: HashMap<(Uuid, &str), usize> = HashMap::with_capacity(events.len());
    let mut states: Vec<TagState<'_>> = Vec::with_capacity(events.len());
    let mut repo_of: HashMap<(RegistryId, &RepositoryName), Uuid> = HashMap::new();
    let mut keyed: Vec<(u64, DateTime<Utc>, &EventPayload, usize)> =
        Vec::with_capacity(events.len());
    let mut evidence: Vec<(u64, &Envelope)> = Vec::new();
    let mut integrity: Vec<(u64, &Envelope)> = Vec::new();
    if let Some(memory) = rules.memory() {
        let mut m = memory.lock().unwrap_or_else(|e| e.into_inner());
        for (_, env) in events {
            match &env.payload {
                EventPayload::TagDiscovered(_)
                | EventPayload::TagMoved(_)
                | EventPayload::TagRemoved(_) => {}
                other => {
                    m.evidence_repos.insert(other.aggregate_id());
                }
            }
        }
    }
    for (seq, env) in events {
        if super::trust::is_evidence(&env.payload) {
            evidence.push((*seq, *env));
            continue;
        }
        if super::integrity::is_integrity(&env.payload) {
            integrity.push((*seq, *env));
            continue;
        }
        let (registry, repository, tag) = match &env.payload {
            EventPayload::TagDiscovered(e) => (e.registry_id, &e.repository, e.tag.as_str()),
            EventPayload::TagMoved(e) => (e.registry_id, &e.repository, e.tag.as_str()),
            EventPayload::TagRemoved(e) => (e.registry_id, &e.repository, e.tag.as_str()),
            _ => continue,
        };
        let repo_id = *repo_of
            .entry((registry, repository))
            .or_insert_with(|| ImageId::derive(registry, repository).0);
        let i = *index.entry((repo_id, tag)).or_insert_with(|| {
            states.push(TagState {
                repo_id,
                tag,
                before: None,
                now: None,
                touch: None,
                close: None,
            });
            states.len() - 1
        });
        keyed.push((*seq, micros(env.time), &env.payload, i));
    }
    if !keyed.is_empty() {
        fold(tx, keyed, index, states, rules).await?;
    }
    // Evidence after the tags: its rows are last-writer-wins by sequence (see `trust`), so
    // this order gives what stream order gives; versions just opened are composed by
    // `fold` and recomposed here if their digests' evidence changed.
    if !evidence.is_empty() {
        let touched = super::trust::apply_evidence(tx, &evidence).await?;
        super::trust::refresh_digests(tx, &touched).await?;
    }
    // Mutations and pulls after the tags too: a mutation marks the tag's current version
    // (the one the tag events of the run left), pulls are sums guarded by sequence.
    if !integrity.is_empty() {
        super::integrity::apply(tx, &integrity).await?;
    }
    Ok(())
}

async fn fold<'a>(
    tx: &mut Transaction<'_, Postgres>,
    keyed: Vec<(u64, DateTime<Utc>, &'a EventPayload, usize)>,
    index: HashMap<(Uuid, &'a str), usize>,
    mut states: Vec<TagState<'a>>,
    rules: &mut RulesCtx<'_>,
) -> Result<(), sqlx::Error> {
    // The current versions of those tags: from memory in a bulk replay, else the database.
    let t0 = std::time::Instant::now();
    if let Some(memory) = rules.memory() {
        // Memory holds what committed batches left. What an earlier run of image events
        // in this batch (before a registry or rule event) changed is merged into it only
        // at the commit: it is read from the batch's pending changes, the last per tag.
        let pending = rules.changes.as_ref().filter(|c| !c.tags.is_empty());
        let m = memory.lock().unwrap_or_else(|e| e.into_inner());
        for st in states.iter_mut() {
            let changed = pending.and_then(|c| c.tags.get(&(st.repo_id, st.tag.into())));
            let current = match changed {
                Some(current) => current.clone(),
                None => m.tags.get(st.repo_id, st.tag),
            };
            if let Some(cur) = current {
                st.now = Some((Origin::Db, cur.digest.clone(), cur.first_seen));
                st.before = Some(cur);
            }
        }
    } else {
        lookup(tx, &index, &mut states).await?;
    }
    prof(0, t0);
    fold_and_write(tx, keyed, states, rules).await
}

async fn lookup<'a>(
    tx: &mut Transaction<'_, Postgres>,
    index: &HashMap<(Uuid, &'a str), usize>,
    states: &mut [TagState<'a>],
) -> Result<(), sqlx::Error> {
    let ids: Vec<Uuid> = states.iter().map(|s| s.repo_id).collect();
    let tags: Vec<&str> = states.iter().map(|s| s.tag).collect();
    let rows = sqlx::query(
        "SELECT t.repo_id, t.tag, t.digest, t.kind, t.first_seen, t.sequence
         FROM UNNEST($1::uuid[], $2::text[]) AS k(repo_id, tag)
         JOIN tag_versions t ON t.repo_id = k.repo_id AND t.tag = k.tag AND t.valid_to IS NULL",
    )
    .bind(&ids)
    .bind(&tags)
    .fetch_all(&mut **tx)
    .await?;
    for row in rows {
        let repo_id: Uuid = row.try_get(0)?;
        let tag: String = row.try_get(1)?;
        if let Some(&i) = index.get(&(repo_id, tag.as_str())) {
            let cur = Current {
                sequence: row.try_get::<i64, _>(5)? as u64,
                digest: row.try_get(2)?,
                kind: row.try_get(3)?,
                first_seen: row.try_get(4)?,
            };
            states[i].now = Some((Origin::Db, cur.digest.clone(), cur.first_seen));
            states[i].before = Some(cur);
        }
    }
    Ok(())
}

async fn fold_and_write<'a>(
    tx: &mut Transaction<'_, Postgres>,
    keyed: Vec<(u64, DateTime<Utc>, &'a EventPayload, usize)>,
    mut states: Vec<TagState<'a>>,
    rules: &mut RulesCtx<'_>,
) -> Result<(), sqlx::Error> {
    let last = keyed.iter().map(|(seq, ..)| *seq).max().unwrap_or(0);
    // Fold.
    let mut new: Vec<NewVersion<'_>> = Vec::new();
    let mut repos: HashMap<Uuid, RepoAgg<'_>> = HashMap::new();
    let mut referrer_lists: Vec<(u64, usize, &str, &[imagelib_events::model::Referrer])> =
        Vec::new();
    for (seq, at, payload, i) in keyed {
        let (registry_id, repository, digest, details) = match payload {
            EventPayload::TagDiscovered(e) => (
                e.registry_id,
                &e.repository,
                Some(e.digest.as_str()),
                Some(&e.details),
            ),
            EventPayload::TagMoved(e) => (
                e.registry_id,
                &e.repository,
                Some(e.new_digest.as_str()),
                Some(&e.details),
            ),
            EventPayload::TagRemoved(e) => (e.registry_id, &e.repository, None, None),
            _ => continue,
        };
        let state = &mut states[i];
        let agg = repos.entry(state.repo_id).or_default();
        agg.registry_id = Some(registry_id);
        agg.name = Some(repository);
        agg.first_seen = Some(agg.first_seen.map_or(at, |f| f.min(at)));
        match (digest, details) {
            (Some(digest), Some(details)) => {
                referrer_lists.push((seq, i, digest, details.referrers.as_slice()));
                if agg.latest.is_none_or(|(s, _)| s < seq) {
                    agg.latest = Some((seq, details));
                }
                match state.now.take() {
                    Some((origin, cur_digest, first_seen)) if cur_digest == digest => {
                        match origin {
                            Origin::Db => {
                                let last = state.touch.map_or(at, |(t, _)| t.max(at));
                                state.touch = Some((last, details));
                            }
                            Origin::New(n) => {
                                let v = &mut new[n];
                                v.last_seen = v.last_seen.max(at);
                                v.details = details;
                            }
                        }
                        state.now = Some((origin, cur_digest, first_seen));
                    }
                    prev => {
                        let first_seen = match prev {
                            Some((origin, _, first_seen)) => {
                                close(state, &mut new, origin, at);
                                first_seen
                            }
                            None => at,
                        };
                        new.push(NewVersion {
                            repo_id: state.repo_id,
                            registry_id,
                            repository,
                            tag: state.tag,
                            sequence: seq,
                            digest,
                            valid_from: at,
                            valid_to: None,
                            first_seen,
                            last_seen: at,
                            details,
                        });
                        agg.updated_at = Some(agg.updated_at.map_or(at, |u| u.max(at)));
                        state.now =
                            Some((Origin::New(new.len() - 1), digest.to_owned(), first_seen));
                    }
                }
            }
            _ => {
                if let Some((origin, _, _)) = state.now.take() {
                    close(state, &mut new, origin, at);
                }
            }
        }
    }

    // Counter deltas: what existed before against what exists now.
    for s in &states {
        let agg = repos.entry(s.repo_id).or_default();
        if let Some(b) = &s.before {
            kind_delta(agg, &b.kind, -1);
        }
        match &s.now {
            Some((Origin::Db, _, _)) => {
                let kind = match s.touch {
                    Some((_, d)) => d.kind.as_str().to_owned(),
                    None => s
                        .before
                        .as_ref()
                        .map(|b| b.kind.clone())
                        .unwrap_or_default(),
                };
                kind_delta(agg, &kind, 1);
            }
            Some((Origin::New(n), _, _)) => {
                let kind = new[*n].details.kind.as_str();
                kind_delta(agg, kind, 1);
            }
            None => {}
        }
    }

    // What memory will hold once this commits.
    if let Some(changes) = rules.changes.as_mut() {
        for st in &states {
            let after = match &st.now {
                None => None,
                Some((Origin::Db, digest, first_seen)) => Some(Current {
                    sequence: st.before.as_ref().map_or(0, |b| b.sequence),
                    digest: digest.clone(),
                    kind: match st.touch {
                        Some((_, d)) => d.kind.as_str().to_owned(),
                        None => st
                            .before
                            .as_ref()
                            .map(|b| b.kind.clone())
                            .unwrap_or_default(),
                    },
                    first_seen: *first_seen,
                }),
                Some((Origin::New(n), digest, first_seen)) => Some(Current {
                    sequence: new[*n].sequence,
                    digest: digest.clone(),
                    kind: new[*n].details.kind.as_str().to_owned(),
                    first_seen: *first_seen,
                }),
            };
            if after.is_some() || st.before.is_some() {
                changes.tags.insert((st.repo_id, st.tag.into()), after);
            }
        }
    }
    let t = std::time::Instant::now();
    write_repositories(tx, &repos, rules).await?;
    prof(1, t);
    let t = std::time::Instant::now();
    let hold = rules.hold && hold_closes(tx, &mut states, rules, last).await?;
    write_touches(tx, &states).await?;
    write_closes(tx, &states).await?;
    prof(2, t);
    let t = std::time::Instant::now();
    if hold {
        hold_new(tx, &new, rules).await?;
    } else {
        write_new(tx, &new).await?;
    }
    prof(3, t);
    let t = std::time::Instant::now();
    // In a bulk replay, only versions of repositories with evidence can have any, and
    // only a digest listed before can have a list to replace.
    let known: Option<(std::collections::HashSet<Uuid>, Vec<bool>)> =
        rules.memory().map(|memory| {
            let mut m = memory.lock().unwrap_or_else(|e| e.into_inner());
            let repos = states
                .iter()
                .map(|s| s.repo_id)
                .filter(|r| m.evidence_repos.contains(r))
                .collect::<std::collections::HashSet<_>>();
            let keep = referrer_lists
                .iter()
                .map(|(_, i, digest, list)| {
                    let key = listed_key(states[*i].repo_id, digest);
                    if list.is_empty() {
                        m.listed.contains(&key) || repos.contains(&states[*i].repo_id)
                    } else {
                        m.listed.insert(key);
                        true
                    }
                })
                .collect();
            (repos, keep)
        });
    let may_have = |repo: &Uuid| known.as_ref().is_none_or(|(e, _)| e.contains(repo));
    let new_in: Vec<&NewVersion<'_>> = new
        .iter()
        .filter(|v| v.valid_to.is_none() && may_have(&v.repo_id))
        .collect();
    let opened: Vec<(Uuid, &str)> = new_in.iter().map(|v| (v.repo_id, v.tag)).collect();
    super::integrity::mark_new(tx, &opened).await?;
    let opened: Vec<(Uuid, &str, &str)> = new_in
        .iter()
        .map(|v| (v.repo_id, v.tag, v.digest))
        .collect();
    super::integrity::pulls_new(tx, &opened).await?;
    let mut lists: Vec<(Uuid, &str, &[imagelib_events::model::Referrer], u64)> = Vec::new();
    for (n, (seq, i, digest, list)) in referrer_lists.into_iter().enumerate() {
        if known.as_ref().is_none_or(|(_, keep)| keep[n]) {
            lists.push((states[i].repo_id, digest, list, seq));
        }
    }
    // A bulk replay shows the recorded lists on its current versions once, at the end.
    super::trust::record_tag_referrers(tx, &lists, rules.memory().is_none()).await?;
    let opened: Vec<super::trust::VersionKey> = new_in
        .iter()
        .map(|v| super::trust::VersionKey {
            repo_id: v.repo_id,
            tag: v.tag.to_owned(),
            digest: v.digest.to_owned(),
            platforms: v
                .details
                .platforms
                .iter()
                .filter_map(|p| p.digest.as_ref().map(|d| d.as_str().to_owned()))
                .collect(),
        })
        .collect();
    super::trust::refresh_new(tx, opened).await?;
    prof(6, t);
    Ok(())
}

/// What [`super::Memory::listed`] keeps of a (repository, digest) pair.
fn listed_key(repo: Uuid, digest: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    repo.hash(&mut h);
    digest.hash(&mut h);
    h.finish()
}

fn close(state: &mut TagState<'_>, new: &mut [NewVersion<'_>], origin: Origin, at: DateTime<Utc>) {
    match origin {
        Origin::Db => state.close = Some(at),
        Origin::New(n) => {
            let v = &mut new[n];
            v.valid_to = Some(at.max(v.valid_from));
        }
    }
}

async fn write_repositories(
    tx: &mut Transaction<'_, Postgres>,
    repos: &HashMap<Uuid, RepoAgg<'_>>,
    rules: &mut RulesCtx<'_>,
) -> Result<(), sqlx::Error> {
    let mut registries = Vec::new();
    let mut names = Vec::new();
    let mut firsts = Vec::new();
    let mut new_ids = Vec::new();
    let mut updates = Vec::with_capacity(repos.len());
    let known: std::collections::HashSet<Uuid> = match rules.memory() {
        Some(m) => {
            let m = m.lock().unwrap_or_else(|e| e.into_inner());
            repos
                .keys()
                .filter(|id| m.repos.contains(id))
                .copied()
                .collect()
        }
        None => Default::default(),
    };
    for (id, agg) in repos {
        let (Some(registry), Some(name), Some(first)) = (agg.registry_id, agg.name, agg.first_seen)
        else {
            continue;
        };
        let changes = agg.latest.is_some()
            || agg.updated_at.is_some()
            || agg.total != 0
            || agg.database != 0
            || agg.model != 0;
        if !changes {
            continue;
        }
        if agg.latest.is_some() && !known.contains(id) {
            // Only a tag that exists makes a repository exist.
            new_ids.push(*id);
            registries.push(registry.0);
            names.push(name.as_str());
            firsts.push(first);
        }
        updates.push(RepoUpdate {
            id: *id,
            latest: agg.latest.map(|(seq, d)| {
                (
                    seq,
                    d.kind.as_str().to_owned(),
                    d.model_type.map(|m| m.as_str().to_owned()),
                    description_of(d).unwrap_or_default().to_owned(),
                )
            }),
            updated_at: agg.updated_at,
            total: agg.total,
            database: agg.database,
            model: agg.model,
        });
    }
    if updates.is_empty() {
        return Ok(());
    }
    let inserted: Vec<(Uuid, Uuid, String)> = if new_ids.is_empty() {
        Vec::new()
    } else {
        sqlx::query_as(
        &format!("INSERT INTO repositories (id, registry_id, name, first_seen, updated_at, search)
         SELECT u.id, u.registry_id, u.name, u.first_seen, u.first_seen, {}
         FROM UNNEST($1::uuid[], $2::uuid[], $3::text[], $4::timestamptz[]) AS u(id, registry_id, name, first_seen)
         ON CONFLICT (id) DO NOTHING
         RETURNING id, registry_id, name", super::other::search_sql("u.name", "''", "''")),
    )
    .bind(&new_ids)
    .bind(&registries)
    .bind(&names)
    .bind(&firsts)
    .fetch_all(&mut **tx)
    .await?
    };
    match rules.changes.as_mut() {
        // A bulk replay writes counters once, at the end.
        Some(changes) => changes.repos_updates.extend(updates),
        None => update_repositories(tx, &updates).await?,
    }
    if let Some(changes) = rules.changes.as_mut() {
        changes.repos.extend(inserted.iter().map(|(id, _, _)| *id));
    }
    if inserted.is_empty() {
        return Ok(());
    }
    // New repositories: what their registry's rules and earlier curation say.
    let mut by_registry: HashMap<Uuid, Vec<(Uuid, String)>> = HashMap::new();
    for (id, registry, name) in &inserted {
        by_registry
            .entry(*registry)
            .or_default()
            .push((*id, name.clone()));
    }
    for (registry, repos) in by_registry {
        let index = rules.get(tx, RegistryId(registry)).await?;
        if index.is_empty() {
            continue;
        }
        let names: Vec<(Uuid, String)> = repos;
        super::other::write_rule_info(tx, &index, &names).await?;
    }
    let created: Vec<Uuid> = inserted.iter().map(|(id, _, _)| *id).collect();
    sqlx::query(&format!(
        "UPDATE repositories r SET curator_hm_tags = l.tags, hm_tags = {}
         FROM (SELECT repo_id, array_agg(hm_tag ORDER BY hm_tag) AS tags FROM hm_labels
               WHERE repo_id = ANY($1) AND tag = '' AND present GROUP BY repo_id) l
         WHERE r.id = l.repo_id",
        super::other::union_sql("r.rule_hm_tags", "l.tags")
    ))
    .bind(&created)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What a run of image events changes on a repository.
#[derive(Debug, Clone)]
pub(crate) struct RepoUpdate {
    pub(crate) id: Uuid,
    /// The latest details seen (sequence, kind, model type, OCI description).
    pub(crate) latest: Option<(u64, String, Option<String>, String)>,
    pub(crate) updated_at: Option<DateTime<Utc>>,
    pub(crate) total: i32,
    pub(crate) database: i32,
    pub(crate) model: i32,
}

impl RepoUpdate {
    /// Fold a later update into this one.
    pub(crate) fn merge(&mut self, later: RepoUpdate) {
        if later.latest.as_ref().map(|l| l.0) > self.latest.as_ref().map(|l| l.0) {
            self.latest = later.latest;
        }
        self.updated_at = self.updated_at.max(later.updated_at);
        self.total += later.total;
        self.database += later.database;
        self.model += later.model;
    }
}

/// Apply repository updates (counters, kind, description) in one statement.
pub(crate) async fn update_repositories(
    tx: &mut Transaction<'_, Postgres>,
    updates: &[RepoUpdate],
) -> Result<(), sqlx::Error> {
    if updates.is_empty() {
        return Ok(());
    }
    let n = updates.len();
    let mut ids = Vec::with_capacity(n);
    let mut kinds: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut model_types: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut descriptions: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut updated = Vec::with_capacity(n);
    let (mut total, mut database, mut model) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for u in updates {
        ids.push(u.id);
        kinds.push(u.latest.as_ref().map(|l| l.1.as_str()));
        model_types.push(u.latest.as_ref().and_then(|l| l.2.as_deref()));
        descriptions.push(u.latest.as_ref().map(|l| l.3.as_str()));
        updated.push(u.updated_at);
        total.push(u.total);
        database.push(u.database);
        model.push(u.model);
    }
    sqlx::query(&format!(
        "UPDATE repositories r SET
            kind = COALESCE(u.kind, r.kind),
            model_type = CASE WHEN u.kind IS NULL THEN r.model_type ELSE u.model_type END,
            oci_description = COALESCE(u.description, r.oci_description),
            search = CASE WHEN u.description IS NULL OR u.description = r.oci_description THEN r.search
                          ELSE {} END,
            updated_at = GREATEST(r.updated_at, COALESCE(u.updated_at, r.updated_at)),
            tag_count = r.tag_count + u.total,
            database_tags = r.database_tags + u.database,
            model_tags = r.model_tags + u.model
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::int[], $7::int[], $8::int[])
              AS u(id, kind, model_type, description, updated_at, total, database, model)
         WHERE r.id = u.id",
        super::other::search_sql("r.name", "r.rule_description", "u.description")
    ))
    .bind(&ids)
    .bind(&kinds)
    .bind(&model_types)
    .bind(&descriptions)
    .bind(&updated)
    .bind(&total)
    .bind(&database)
    .bind(&model)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn write_touches(
    tx: &mut Transaction<'_, Postgres>,
    states: &[TagState<'_>],
) -> Result<(), sqlx::Error> {
    let touched: Vec<&TagState<'_>> = states.iter().filter(|s| s.touch.is_some()).collect();
    if touched.is_empty() {
        return Ok(());
    }
    let n = touched.len();
    let mut ids = Vec::with_capacity(n);
    let mut tags = Vec::with_capacity(n);
    let mut last_seen = Vec::with_capacity(n);
    let mut media = Vec::with_capacity(n);
    let mut artifact: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut kinds = Vec::with_capacity(n);
    let mut model_types: Vec<Option<&str>> = Vec::with_capacity(n);
    let mut archs = Vec::with_capacity(n);
    let mut platforms = Vec::with_capacity(n);
    let mut sizes = Vec::with_capacity(n);
    let mut created = Vec::with_capacity(n);
    let mut labels = Vec::with_capacity(n);
    let mut annotations = Vec::with_capacity(n);
    let mut extensions = Vec::with_capacity(n);
    let mut referrers = Vec::with_capacity(n);
    for s in touched {
        let Some((at, d)) = s.touch else { continue };
        ids.push(s.repo_id);
        tags.push(s.tag);
        last_seen.push(at);
        media.push(d.media_type.as_str());
        artifact.push(d.artifact_type.as_deref());
        kinds.push(d.kind.as_str());
        model_types.push(d.model_type.map(|m| m.as_str()));
        archs.push(array_literal(&archs_of(d)));
        platforms.push(json(&d.platforms));
        sizes.push(i64::try_from(d.size).unwrap_or(i64::MAX));
        created.push(d.created.map(micros));
        labels.push(json(&d.labels));
        annotations.push(json(&d.annotations));
        extensions.push(json(&d.extensions));
        referrers.push(json(&d.referrers));
    }
    sqlx::query(
        "UPDATE tag_versions t SET
            last_seen = GREATEST(t.last_seen, u.last_seen),
            media_type = u.media_type, artifact_type = u.artifact_type, kind = u.kind,
            model_type = u.model_type, archs = u.archs::text[], platforms = u.platforms::jsonb,
            size = u.size, created = u.created, labels = u.labels::jsonb,
            annotations = u.annotations::jsonb, extensions = u.extensions::jsonb,
            referrers = u.referrers::jsonb
         FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],
                     $7::text[], $8::text[], $9::text[], $10::int8[], $11::timestamptz[], $12::text[],
                     $13::text[], $14::text[], $15::text[])
              AS u(repo_id, tag, last_seen, media_type, artifact_type, kind, model_type, archs,
                   platforms, size, created, labels, annotations, extensions, referrers)
         WHERE t.repo_id = u.repo_id AND t.tag = u.tag AND t.valid_to IS NULL",
    )
    .bind(&ids)
    .bind(&tags)
    .bind(&last_seen)
    .bind(&media)
    .bind(&artifact)
    .bind(&kinds)
    .bind(&model_types)
    .bind(&archs)
    .bind(&platforms)
    .bind(&sizes)
    .bind(&created)
    .bind(&labels)
    .bind(&annotations)
    .bind(&extensions)
    .bind(&referrers)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Close versions. Trust, the mutation mark, the pulls and the listed referrers are kept on
/// current versions only (a closed
/// one would otherwise keep whatever its digest showed when the batch that closed it began,
/// which depends on batching): history shows none.
async fn write_closes(
    tx: &mut Transaction<'_, Postgres>,
    states: &[TagState<'_>],
) -> Result<(), sqlx::Error> {
    let mut ids = Vec::new();
    let mut tags = Vec::new();
    let mut ends = Vec::new();
    for s in states {
        if let Some(at) = s.close {
            ids.push(s.repo_id);
            tags.push(s.tag);
            ends.push(at);
        }
    }
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE tag_versions t SET valid_to = GREATEST(u.valid_to, t.valid_from),
            signed = false, max_severity = NULL, has_sbom = false, policy = NULL, trust = NULL,
            mutated = false, mutation = NULL, tag_pulls = 0, tag_last_pulled_at = NULL,
            digest_pulls = 0, digest_last_pulled_at = NULL, listed_referrers = NULL
         FROM UNNEST($1::uuid[], $2::text[], $3::timestamptz[]) AS u(repo_id, tag, valid_to)
         WHERE t.repo_id = u.repo_id AND t.tag = u.tag AND t.valid_to IS NULL",
    )
    .bind(&ids)
    .bind(&tags)
    .bind(&ends)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// What curators decided for the tags of new versions (usually nothing): the decisions
/// and the tag-level HM tags a version opens with.
struct Curation {
    decisions: HashMap<Uuid, HashMap<String, (String, Option<String>)>>,
    labels: HashMap<Uuid, HashMap<String, Vec<String>>>,
}

impl Curation {
    async fn read(
        tx: &mut Transaction<'_, Postgres>,
        new: &[NewVersion<'_>],
    ) -> Result<Self, sqlx::Error> {
        let mut repo_ids: Vec<Uuid> = new.iter().map(|v| v.repo_id).collect();
        repo_ids.sort_unstable();
        repo_ids.dedup();
        let decisions: Vec<(Uuid, String, String, Option<String>)> = sqlx::query_as(
            "SELECT repo_id, tag, decision, digest FROM approvals WHERE repo_id = ANY($1)",
        )
        .bind(&repo_ids)
        .fetch_all(&mut **tx)
        .await?;
        let labels: Vec<(Uuid, String, String)> = sqlx::query_as(
            "SELECT repo_id, tag, hm_tag FROM hm_labels
             WHERE repo_id = ANY($1) AND tag <> '' AND present ORDER BY hm_tag",
        )
        .bind(&repo_ids)
        .fetch_all(&mut **tx)
        .await?;
        let mut c = Curation {
            decisions: HashMap::new(),
            labels: HashMap::new(),
        };
        for (r, t, d, g) in decisions {
            c.decisions.entry(r).or_default().insert(t, (d, g));
        }
        for (r, t, h) in labels {
            c.labels.entry(r).or_default().entry(t).or_default().push(h);
        }
        Ok(c)
    }

    /// A new version's tag-level HM tags and effective decision.
    fn of(&self, v: &NewVersion<'_>) -> (Vec<&str>, Option<&str>) {
        let decisions = self.decisions.get(&v.repo_id);
        let decision = |tag: &str| {
            decisions
                .and_then(|d| d.get(tag))
                .map(|(d, g)| (d.as_str(), g.as_deref()))
        };
        let approval = effective_approval(decision(v.tag), decision("").map(|(d, _)| d), v.digest);
        let labels = self
            .labels
            .get(&v.repo_id)
            .and_then(|l| l.get(v.tag))
            .map(|l| l.iter().map(String::as_str).collect())
            .unwrap_or_default();
        (labels, approval)
    }
}

async fn write_new(
    tx: &mut Transaction<'_, Postgres>,
    new: &[NewVersion<'_>],
) -> Result<(), sqlx::Error> {
    if new.is_empty() {
        return Ok(());
    }
    let curation = Curation::read(tx, new).await?;
    // The rows go out as they are encoded, so that PostgreSQL parses and inserts the first
    // while the last are still being written here.
    let mut copy = tx.copy_in_raw(&binary_copy_statement()).await?;
    let mut buf = BinaryRows::new();
    for v in new {
        let (labels, approval) = curation.of(v);
        encode_version_binary(&mut buf, v, &labels, approval);
        if buf.len() >= COPY_CHUNK {
            copy.send(buf.as_bytes()).await?;
            buf.clear();
        }
    }
    buf.end();
    copy.send(buf.as_bytes()).await?;
    copy.finish().await?;
    Ok(())
}

/// While this batch holds ([`super::held`]): the ends of held versions are noted instead of
/// written (and taken off `states`), unless a held version is refreshed (its details change),
/// which writes what is held first. Whether the batch still holds its new versions.
async fn hold_closes(
    tx: &mut Transaction<'_, Postgres>,
    states: &mut [TagState<'_>],
    rules: &RulesCtx<'_>,
    last: u64,
) -> Result<bool, sqlx::Error> {
    let Some(memory) = rules.memory() else {
        return Ok(false);
    };
    let Some(mut held) = memory.lock().unwrap_or_else(|e| e.into_inner()).held.take() else {
        return Ok(false);
    };
    let refreshed = states
        .iter()
        .any(|s| s.touch.is_some() && s.before.as_ref().is_some_and(|b| held.holds(b.sequence)));
    let result = if refreshed {
        held.flush(tx, last.saturating_add(1)).await.map(|_| false)
    } else {
        for s in states.iter_mut() {
            if let (Some(at), Some(b)) = (s.close, &s.before)
                && held.holds(b.sequence)
            {
                held.close(b.sequence, at);
                s.close = None;
            }
        }
        Ok(true)
    };
    memory.lock().unwrap_or_else(|e| e.into_inner()).held = Some(held);
    result
}

/// Hold this batch's new versions ([`super::held`]).
async fn hold_new(
    tx: &mut Transaction<'_, Postgres>,
    new: &[NewVersion<'_>],
    rules: &RulesCtx<'_>,
) -> Result<(), sqlx::Error> {
    let Some(memory) = rules.memory().filter(|_| !new.is_empty()) else {
        return Ok(());
    };
    let curation = Curation::read(tx, new).await?;
    let mut m = memory.lock().unwrap_or_else(|e| e.into_inner());
    let Some(held) = m.held.as_mut() else {
        return Err(sqlx::Error::Protocol(
            "a batch held its versions with nothing to hold them".into(),
        ));
    };
    for v in new {
        let (labels, approval) = curation.of(v);
        held.push(v, &labels, approval)?;
    }
    Ok(())
}

pub static PROFILE: [std::sync::atomic::AtomicU64; 8] =
    [const { std::sync::atomic::AtomicU64::new(0) }; 8];
pub(crate) fn prof(i: usize, t: std::time::Instant) {
    PROFILE[i].fetch_add(
        t.elapsed().as_micros() as u64,
        std::sync::atomic::Ordering::Relaxed,
    );
}
