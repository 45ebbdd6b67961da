//! Tag integrity and pulls (issue 14): `image.tag_mutated` and `image.pulls_counted`.
//!
//! A mutation is a fact about a tag, not about one of its versions: the scanner found a tag
//! that policy calls immutable at another digest. Every one is kept (`tag_mutations`, one
//! row per event, old and new digest), so what the tag pointed at before stays visible
//! whatever the versions say later, and the tag's current version is marked
//! (`tag_versions.mutated`) for the list filter and the counter. The mark is set on the
//! current version only — when a mutation arrives and whenever a version of a mutated tag
//! opens — and cleared when a version closes, so it is the same whatever the batching of a
//! replay. `tag_moved` still moves the tag: the scanner emits both, in either order.
//!
//! Pulls arrive already aggregated over a window (never one event per pull) and are summed
//! per (repository, tag, digest) with the latest pull time. A sum is not last-writer-wins,
//! so each row remembers the last event it added (`sequence`): an event at or below it is a
//! redelivery and adds nothing. Events of one aggregate are applied in stream order, so a
//! rebuild, a replay in any batching or a redelivery past the recorded position all give
//! the sums of one pass over the stream.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use imagelib_events::{Envelope, EventPayload, ImageId};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::{enum_str, micros};

/// Whether an event is one this module applies.
pub fn is_integrity(p: &EventPayload) -> bool {
    matches!(
        p,
        EventPayload::TagMutated(_) | EventPayload::PullsCounted(_)
    )
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Apply a run of mutation and pull events (in stream order) within `tx`, after the tag
/// events of the same run.
pub(crate) async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    events: &[(u64, &Envelope)],
) -> Result<(), sqlx::Error> {
    mutations(tx, events).await?;
    pulls(tx, events).await
}

async fn mutations(
    tx: &mut Transaction<'_, Postgres>,
    events: &[(u64, &Envelope)],
) -> Result<(), sqlx::Error> {
    let mut repo_ids = Vec::new();
    let mut tags = Vec::new();
    let mut seqs = Vec::new();
    let mut registries = Vec::new();
    let mut repositories = Vec::new();
    let mut olds = Vec::new();
    let mut news = Vec::new();
    let mut found_by = Vec::new();
    let mut seen_at: Vec<Option<DateTime<Utc>>> = Vec::new();
    let mut ats = Vec::new();
    for (seq, env) in events {
        let EventPayload::TagMutated(e) = &env.payload else {
            continue;
        };
        repo_ids.push(ImageId::derive(e.registry_id, &e.repository).0);
        tags.push(e.tag.as_str());
        seqs.push(i64_of(*seq));
        registries.push(e.registry_id.0);
        repositories.push(e.repository.as_str());
        olds.push(e.old_digest.as_str());
        news.push(e.new_digest.as_str());
        found_by.push(enum_str(&e.found_by));
        seen_at.push(e.seen_at.map(micros));
        ats.push(micros(env.time));
    }
    if repo_ids.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO tag_mutations (repo_id, tag, sequence, registry_id, repository, old_digest,
            new_digest, found_by, seen_at, at)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::int8[], $4::uuid[], $5::text[], $6::text[],
                              $7::text[], $8::text[], $9::timestamptz[], $10::timestamptz[])
         ON CONFLICT (repo_id, tag, sequence) DO NOTHING",
    )
    .bind(&repo_ids)
    .bind(&tags)
    .bind(&seqs)
    .bind(&registries)
    .bind(&repositories)
    .bind(&olds)
    .bind(&news)
    .bind(&found_by)
    .bind(&seen_at)
    .bind(&ats)
    .execute(&mut **tx)
    .await?;
    sqlx::query(&format!(
        "UPDATE tag_versions t SET mutated = true, mutation = {LATEST_MUTATION}
         FROM (SELECT DISTINCT * FROM UNNEST($1::uuid[], $2::text[])) AS k(repo_id, tag)
         WHERE t.repo_id = k.repo_id AND t.tag = k.tag AND t.valid_to IS NULL"
    ))
    .bind(&repo_ids)
    .bind(&tags)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The latest mutation of the tag of version `t`, as the API shows it (kept on the current
/// version so that a page reads it from the row it lists).
const LATEST_MUTATION: &str = "(SELECT jsonb_build_object('old_digest', m.old_digest,
        'new_digest', m.new_digest, 'found_by', m.found_by, 'seen_at', m.seen_at, 'at', m.at)
    FROM tag_mutations m WHERE m.repo_id = t.repo_id AND m.tag = t.tag
    ORDER BY m.sequence DESC LIMIT 1)";

/// The pulls of the current versions at these tags, summed over every digest they pointed at.
const SET_TAG_PULLS: &str =
    "UPDATE tag_versions t SET tag_pulls = s.pulls, tag_last_pulled_at = s.last
    FROM (SELECT p.repo_id, p.tag, LEAST(sum(p.pulls), 9223372036854775807)::int8 AS pulls,
                 max(p.last_pulled_at) AS last
          FROM (SELECT DISTINCT * FROM UNNEST($1::uuid[], $2::text[])) AS k(repo_id, tag)
          JOIN pulls p ON p.repo_id = k.repo_id AND p.tag = k.tag
          GROUP BY p.repo_id, p.tag) s
    WHERE t.repo_id = s.repo_id AND t.tag = s.tag AND t.valid_to IS NULL";

/// The pulls of the current versions at these digests, under any tag or by digest.
const SET_DIGEST_PULLS: &str =
    "UPDATE tag_versions t SET digest_pulls = s.pulls, digest_last_pulled_at = s.last
    FROM (SELECT p.repo_id, p.digest, LEAST(sum(p.pulls), 9223372036854775807)::int8 AS pulls,
                 max(p.last_pulled_at) AS last
          FROM (SELECT DISTINCT * FROM UNNEST($1::uuid[], $2::text[])) AS k(repo_id, digest)
          JOIN pulls p ON p.repo_id = k.repo_id AND p.digest = k.digest
          GROUP BY p.repo_id, p.digest) s
    WHERE t.repo_id = s.repo_id AND t.digest = s.digest AND t.valid_to IS NULL";

/// Give the versions just opened the pulls already counted for their tags and digests (one
/// probe of the pulls of their repositories; nothing more for a catalog without pulls).
pub(crate) async fn pulls_new(
    tx: &mut Transaction<'_, Postgres>,
    opened: &[(Uuid, &str, &str)],
) -> Result<(), sqlx::Error> {
    if opened.is_empty() {
        return Ok(());
    }
    let mut repos: Vec<Uuid> = opened.iter().map(|(r, _, _)| *r).collect();
    repos.sort_unstable();
    repos.dedup();
    let counted: Vec<Uuid> =
        sqlx::query_scalar("SELECT DISTINCT repo_id FROM pulls WHERE repo_id = ANY($1)")
            .bind(&repos)
            .fetch_all(&mut **tx)
            .await?;
    if counted.is_empty() {
        return Ok(());
    }
    let counted: std::collections::HashSet<Uuid> = counted.into_iter().collect();
    let mut ids = Vec::new();
    let mut tags = Vec::new();
    let mut digests = Vec::new();
    for (r, t, d) in opened.iter().filter(|(r, _, _)| counted.contains(r)) {
        ids.push(*r);
        tags.push(*t);
        digests.push(*d);
    }
    set_pulls(tx, &ids, &tags, &ids, &digests).await
}

async fn set_pulls(
    tx: &mut Transaction<'_, Postgres>,
    tag_ids: &[Uuid],
    tags: &[&str],
    digest_ids: &[Uuid],
    digests: &[&str],
) -> Result<(), sqlx::Error> {
    if !tag_ids.is_empty() {
        sqlx::query(SET_TAG_PULLS)
            .bind(tag_ids)
            .bind(tags)
            .execute(&mut **tx)
            .await?;
    }
    if !digest_ids.is_empty() {
        sqlx::query(SET_DIGEST_PULLS)
            .bind(digest_ids)
            .bind(digests)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Mark the versions just opened of tags that were ever mutated (one probe of the
/// mutations of their repositories; nothing more for a catalog without mutations).
pub(crate) async fn mark_new(
    tx: &mut Transaction<'_, Postgres>,
    opened: &[(Uuid, &str)],
) -> Result<(), sqlx::Error> {
    if opened.is_empty() {
        return Ok(());
    }
    let mut repos: Vec<Uuid> = opened.iter().map(|(r, _)| *r).collect();
    repos.sort_unstable();
    repos.dedup();
    let mutated: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT DISTINCT repo_id, tag FROM tag_mutations WHERE repo_id = ANY($1)")
            .bind(&repos)
            .fetch_all(&mut **tx)
            .await?;
    if mutated.is_empty() {
        return Ok(());
    }
    let mutated: std::collections::HashSet<(Uuid, &str)> =
        mutated.iter().map(|(r, t)| (*r, t.as_str())).collect();
    let (ids, tags): (Vec<Uuid>, Vec<&str>) = opened
        .iter()
        .filter(|k| mutated.contains(k))
        .copied()
        .unzip();
    if ids.is_empty() {
        return Ok(());
    }
    sqlx::query(&format!(
        "UPDATE tag_versions t SET mutated = true, mutation = {LATEST_MUTATION}
         FROM UNNEST($1::uuid[], $2::text[]) AS k(repo_id, tag)
         WHERE t.repo_id = k.repo_id AND t.tag = k.tag AND t.valid_to IS NULL"
    ))
    .bind(&ids)
    .bind(&tags)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// A pulls row as this batch will leave it.
struct PullSum {
    pulls: i64,
    first: DateTime<Utc>,
    last: DateTime<Utc>,
    sequence: i64,
}

type PullKey<'a> = (Uuid, &'a str, &'a str);

async fn pulls(
    tx: &mut Transaction<'_, Postgres>,
    events: &[(u64, &Envelope)],
) -> Result<(), sqlx::Error> {
    let mut keyed: Vec<(PullKey<'_>, i64, &imagelib_events::event::PullsCounted)> = Vec::new();
    for (seq, env) in events {
        let EventPayload::PullsCounted(e) = &env.payload else {
            continue;
        };
        let repo_id = ImageId::derive(e.registry_id, &e.repository).0;
        let tag = e.tag.as_ref().map(|t| t.as_str()).unwrap_or("");
        keyed.push(((repo_id, tag, e.digest.as_str()), i64_of(*seq), e));
    }
    if keyed.is_empty() {
        return Ok(());
    }
    // What each row has already added up to.
    let (ids, (tags, digests)): (Vec<Uuid>, (Vec<&str>, Vec<&str>)) =
        keyed.iter().map(|((r, t, d), _, _)| (*r, (*t, *d))).unzip();
    let applied: Vec<(Uuid, String, String, i64)> = sqlx::query_as(
        "SELECT p.repo_id, p.tag, p.digest, p.sequence
         FROM (SELECT DISTINCT * FROM UNNEST($1::uuid[], $2::text[], $3::text[])) AS k(repo_id, tag, digest)
         JOIN pulls p ON p.repo_id = k.repo_id AND p.tag = k.tag AND p.digest = k.digest",
    )
    .bind(&ids)
    .bind(&tags)
    .bind(&digests)
    .fetch_all(&mut **tx)
    .await?;
    let applied: HashMap<(Uuid, &str, &str), i64> = applied
        .iter()
        .map(|(r, t, d, s)| ((*r, t.as_str(), d.as_str()), *s))
        .collect();
    let mut sums: HashMap<PullKey<'_>, PullSum> = HashMap::new();
    let mut order: Vec<PullKey<'_>> = Vec::new();
    for (key, seq, e) in keyed {
        if applied.get(&key).is_some_and(|s| *s >= seq) {
            continue;
        }
        let (first, last) = (micros(e.first_pulled_at), micros(e.last_pulled_at));
        let (first, last) = (first.min(last), first.max(last));
        match sums.get_mut(&key) {
            Some(s) if s.sequence < seq => {
                s.pulls = s.pulls.saturating_add(i64_of(e.pulls));
                s.first = s.first.min(first);
                s.last = s.last.max(last);
                s.sequence = seq;
            }
            Some(_) => {}
            None => {
                order.push(key);
                sums.insert(
                    key,
                    PullSum {
                        pulls: i64_of(e.pulls),
                        first,
                        last,
                        sequence: seq,
                    },
                );
            }
        }
    }
    if order.is_empty() {
        return Ok(());
    }
    let n = order.len();
    let (mut ids, mut tags, mut digests) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut counts, mut firsts, mut lasts, mut seqs) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for key in order {
        let Some(s) = sums.get(&key) else { continue };
        ids.push(key.0);
        tags.push(key.1);
        digests.push(key.2);
        counts.push(s.pulls);
        firsts.push(s.first);
        lasts.push(s.last);
        seqs.push(s.sequence);
    }
    sqlx::query(
        "INSERT INTO pulls (repo_id, tag, digest, pulls, first_pulled_at, last_pulled_at, sequence)
         SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::int8[], $5::timestamptz[],
                              $6::timestamptz[], $7::int8[])
         ON CONFLICT (repo_id, tag, digest) DO UPDATE SET
            pulls = CASE WHEN pulls.pulls > 9223372036854775807 - EXCLUDED.pulls
                         THEN 9223372036854775807 ELSE pulls.pulls + EXCLUDED.pulls END,
            first_pulled_at = LEAST(pulls.first_pulled_at, EXCLUDED.first_pulled_at),
            last_pulled_at = GREATEST(pulls.last_pulled_at, EXCLUDED.last_pulled_at),
            sequence = EXCLUDED.sequence
         WHERE pulls.sequence < EXCLUDED.sequence",
    )
    .bind(&ids)
    .bind(&tags)
    .bind(&digests)
    .bind(&counts)
    .bind(&firsts)
    .bind(&lasts)
    .bind(&seqs)
    .execute(&mut **tx)
    .await?;
    // The sums shown on the current versions of the tags and digests counted.
    let (tag_ids, tag_names): (Vec<Uuid>, Vec<&str>) = ids
        .iter()
        .zip(&tags)
        .filter(|(_, t)| !t.is_empty())
        .map(|(r, t)| (*r, *t))
        .unzip();
    set_pulls(tx, &tag_ids, &tag_names, &ids, &digests).await
}
