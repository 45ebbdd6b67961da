//! Every event other than `image.*`, applied one at a time in stream order.

use imagelib_events::model::CatalogTarget;
use imagelib_events::{Envelope, EventPayload, ImageId, RegistryId, RepositoryName};
use imagelib_rules::RuleSetIndex;
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use super::images::RECOMPUTE_APPROVAL;
use super::{RulesCtx, enum_str, micros};
use crate::copy::array_literal;

/// SQL for the sorted union of two `text[]` expressions.
pub(crate) fn union_sql(a: &str, b: &str) -> String {
    format!("ARRAY(SELECT DISTINCT x FROM unnest({a} || {b}) AS x ORDER BY x)")
}

/// SQL for a repository's search vector from its name and descriptions.
pub(crate) fn search_sql(name: &str, rule_description: &str, oci_description: &str) -> String {
    format!(
        "to_tsvector('simple', translate({name}, '/._-', '    ') || ' ' || {name} || ' ' || \
         CASE WHEN {rule_description} <> '' THEN {rule_description} ELSE {oci_description} END)"
    )
}

/// The repository id and tag (`''` for the repository itself) a catalog event is about.
pub(crate) fn target_key(t: &CatalogTarget) -> (Uuid, String) {
    (
        ImageId::derive(t.registry_id, &t.repository).0,
        t.tag
            .as_ref()
            .map(|t| t.as_str().to_owned())
            .unwrap_or_default(),
    )
}

pub(crate) async fn apply(
    tx: &mut Transaction<'_, Postgres>,
    seq: u64,
    env: &Envelope,
    rules: &mut RulesCtx<'_>,
) -> Result<(), sqlx::Error> {
    let at = micros(env.time);
    let seq_i = seq as i64;
    match &env.payload {
        // ------------------------------------------------------------ registries
        EventPayload::RegistryRegistered(e) => {
            sqlx::query(
                "INSERT INTO registries (id, label, url, registry_type, insecure, visibility, registered_at, updated_at, report_pulls)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8) ON CONFLICT (id) DO NOTHING",
            )
            .bind(e.registry_id.0)
            .bind(&e.label)
            .bind(&e.url)
            .bind(enum_str(&e.registry_type))
            .bind(e.insecure)
            .bind(&e.visibility)
            .bind(at)
            .bind(e.report_pulls)
            .execute(&mut **tx)
            .await?;
        }
        EventPayload::RegistryUpdated(e) => {
            let reconnect = e.url.is_some() || e.insecure.is_some() || e.ca_pem.is_some();
            sqlx::query(
                "UPDATE registries SET label = COALESCE($2, label), url = COALESCE($3, url),
                    insecure = COALESCE($4, insecure), visibility = COALESCE($5, visibility),
                    status = CASE WHEN $6 THEN 'pending' ELSE status END, updated_at = $7,
                    report_pulls = COALESCE($8, report_pulls)
                 WHERE id = $1",
            )
            .bind(e.registry_id.0)
            .bind(&e.label)
            .bind(&e.url)
            .bind(e.insecure)
            .bind(&e.visibility)
            .bind(reconnect)
            .bind(at)
            .bind(e.report_pulls)
            .execute(&mut **tx)
            .await?;
        }
        EventPayload::RegistryCredentialsRotated(e) => {
            sqlx::query("UPDATE registries SET status = 'pending', updated_at = $2 WHERE id = $1")
                .bind(e.registry_id.0)
                .bind(at)
                .execute(&mut **tx)
                .await?;
        }
        EventPayload::RegistryValidated(e) => {
            sqlx::query(
                "UPDATE registries SET status = 'validated', status_reason = NULL, status_detail = NULL,
                    updated_at = $2 WHERE id = $1",
            )
            .bind(e.registry_id.0)
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        EventPayload::RegistryValidationFailed(e) => {
            sqlx::query(
                "UPDATE registries SET status = 'validation_failed', status_reason = $2,
                    status_detail = $3, updated_at = $4 WHERE id = $1",
            )
            .bind(e.registry_id.0)
            .bind(enum_str(&e.reason))
            .bind(&e.detail)
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        EventPayload::RegistryRemoved(e) => {
            sqlx::query(
                "UPDATE registries SET removed_at = COALESCE(removed_at, $2), updated_at = $2 WHERE id = $1",
            )
            .bind(e.registry_id.0)
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }

        // ------------------------------------------------------------ rules
        EventPayload::RuleSet(e) => {
            let body = serde_json::to_value(e).unwrap_or_default();
            sqlx::query(
                "INSERT INTO rules (registry_id, rule_id, body) VALUES ($1, $2, $3)
                 ON CONFLICT (registry_id, rule_id) DO UPDATE SET body = EXCLUDED.body",
            )
            .bind(e.registry_id.0)
            .bind(e.rule_id.as_str())
            .bind(body)
            .execute(&mut **tx)
            .await?;
            rules.invalidate(e.registry_id);
            recompute_registry_rules(tx, e.registry_id, rules).await?;
        }
        EventPayload::RuleRemoved(e) => {
            sqlx::query("DELETE FROM rules WHERE registry_id = $1 AND rule_id = $2")
                .bind(e.registry_id.0)
                .bind(e.rule_id.as_str())
                .execute(&mut **tx)
                .await?;
            rules.invalidate(e.registry_id);
            recompute_registry_rules(tx, e.registry_id, rules).await?;
        }

        // ------------------------------------------------------------ syncs
        EventPayload::SyncRequested(e) => {
            sqlx::query(
                "UPDATE registries SET sync_requested_at = $2,
                    sync_status = CASE WHEN sync_status = 'running' THEN sync_status ELSE 'requested' END,
                    sync_reason = CASE WHEN sync_status = 'running' THEN sync_reason ELSE $3 END,
                    sync_repository = CASE WHEN sync_status = 'running' THEN sync_repository ELSE $4 END
                 WHERE id = $1",
            )
            .bind(e.registry_id.0)
            .bind(at)
            .bind(enum_str(&e.reason))
            .bind(e.repository.as_ref().map(|r| r.as_str()))
            .execute(&mut **tx)
            .await?;
        }
        EventPayload::SyncStarted(e) => {
            sqlx::query(
                "UPDATE registries SET sync_status = 'running', sync_id = $2, sync_started_at = $3,
                    sync_reason = $4, sync_repository = $5, sync_finished_at = NULL, sync_error = NULL
                 WHERE id = $1",
            )
            .bind(e.registry_id.0)
            .bind(e.sync_id.0)
            .bind(at)
            .bind(enum_str(&e.reason))
            .bind(e.repository.as_ref().map(|r| r.as_str()))
            .execute(&mut **tx)
            .await?;
        }
        EventPayload::SyncCompleted(e) => {
            let counts = serde_json::json!({
                "repositories": e.repositories, "tags_seen": e.tags_seen, "added": e.added,
                "moved": e.moved, "removed": e.removed, "requests": e.requests,
                "duration_ms": e.duration_ms, "partial": e.partial,
                "rate_limited": e.rate_limited,
            });
            sqlx::query(
                "UPDATE registries SET sync_status = 'completed', sync_id = $2, sync_finished_at = $3,
                    sync_error = NULL, sync_counts = $4, sync_completed_at = $3
                 WHERE id = $1",
            )
            .bind(e.registry_id.0)
            .bind(e.sync_id.0)
            .bind(at)
            .bind(counts)
            .execute(&mut **tx)
            .await?;
        }
        EventPayload::SyncFailed(e) => {
            sqlx::query(
                "UPDATE registries SET sync_status = 'failed', sync_id = $2, sync_finished_at = $3,
                    sync_error = $4 WHERE id = $1",
            )
            .bind(e.registry_id.0)
            .bind(e.sync_id.0)
            .bind(at)
            .bind(&e.reason)
            .execute(&mut **tx)
            .await?;
        }

        // ------------------------------------------------------------ images
        EventPayload::TagDiscovered(_)
        | EventPayload::TagMoved(_)
        | EventPayload::TagRemoved(_)
        | EventPayload::SignatureVerified(_)
        | EventPayload::SignatureFailed(_)
        | EventPayload::VulnerabilitiesReported(_)
        | EventPayload::SbomFound(_)
        | EventPayload::PolicyEvaluated(_)
        | EventPayload::ReferrersChanged(_) => {
            super::images::flush(tx, &[(seq, env)], rules).await?;
        }

        // Tag mutations and pulls (issue 14): image events, applied with them.
        EventPayload::TagMutated(_) | EventPayload::PullsCounted(_) => {
            super::images::flush(tx, &[(seq, env)], rules).await?;
        }

        // Subscriptions (issue 14): not shown by the catalog; skipped, not dead-lettered.
        EventPayload::SubscriptionCreated(_)
        | EventPayload::SubscriptionRemoved(_)
        | EventPayload::SubscriptionReplayRequested(_) => {}

        // The latest violation is shown on the deployment ("used by").
        EventPayload::DeploymentPolicyViolated(e) => {
            let mut seen = std::collections::HashSet::new();
            let mut reasons: Vec<String> = e.reasons.iter().map(enum_str).collect();
            reasons.retain(|r| seen.insert(r.clone()));
            reasons.truncate(imagelib_events::model::PolicyReason::ALL.len());
            let findings: Vec<imagelib_events::model::PolicyFinding> = e
                .findings
                .iter()
                .take(super::trust::MAX_LISTED)
                .map(|f| imagelib_events::model::PolicyFinding {
                    reason: f.reason,
                    detail: super::trust::clip(&f.detail).to_owned(),
                })
                .collect();
            let violation = serde_json::json!({
                "digest": e.digest.as_str(),
                "stage": enum_str(&e.stage),
                "reasons": reasons,
                "findings": findings,
                "rule": e.policy.as_ref().map(|p| p.as_str()),
                "at": at,
                "sequence": seq_i,
            });
            sqlx::query(
                "UPDATE deployments SET policy_violation = $2 WHERE id = $1
                    AND (policy_violation IS NULL OR (policy_violation->>'sequence')::int8 < $3)",
            )
            .bind(e.deployment_id.0)
            .bind(violation)
            .bind(seq_i)
            .execute(&mut **tx)
            .await?;
        }

        // ------------------------------------------------------------ curation
        EventPayload::CatalogLabeled(e) => {
            label(tx, &e.target, e.hm_tag.as_str(), true, seq_i, env, at).await?;
        }
        EventPayload::CatalogUnlabeled(e) => {
            label(tx, &e.target, e.hm_tag.as_str(), false, seq_i, env, at).await?;
        }
        EventPayload::CatalogReadmeSet(e) => {
            let (repo_id, tag) = target_key(&e.target);
            sqlx::query(
                "INSERT INTO readmes (repo_id, tag, readme, actor, at, sequence) VALUES ($1, $2, $3, $4, $5, $6)
                 ON CONFLICT (repo_id, tag) DO UPDATE SET readme = EXCLUDED.readme, actor = EXCLUDED.actor,
                    at = EXCLUDED.at, sequence = EXCLUDED.sequence
                 WHERE readmes.sequence < EXCLUDED.sequence",
            )
            .bind(repo_id)
            .bind(&tag)
            .bind(&e.readme)
            .bind(&env.actor)
            .bind(at)
            .bind(seq_i)
            .execute(&mut **tx)
            .await?;
        }
        EventPayload::CatalogApproved(e) => {
            decide(
                tx,
                &e.target,
                "approved",
                e.digest.as_ref().map(|d| d.as_str()),
                &e.reason,
                seq_i,
                env,
                at,
            )
            .await?;
        }
        EventPayload::CatalogRejected(e) => {
            decide(
                tx,
                &e.target,
                "rejected",
                e.digest.as_ref().map(|d| d.as_str()),
                &e.reason,
                seq_i,
                env,
                at,
            )
            .await?;
        }

        // ------------------------------------------------------------ deployments
        EventPayload::DeploymentRequested(e) => {
            let repo_id = ImageId::derive(e.image.registry_id, &e.image.repository).0;
            sqlx::query(
                "INSERT INTO deployments (id, repo_id, registry_id, repository, tag, digest, name, namespace,
                    workload, target, replicas, status, requested_by, requested_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, 'requested', $12, $13, $13)
                 ON CONFLICT (id) DO NOTHING",
            )
            .bind(e.deployment_id.0)
            .bind(repo_id)
            .bind(e.image.registry_id.0)
            .bind(e.image.repository.as_str())
            .bind(e.image.tag.as_str())
            .bind(e.digest.as_str())
            .bind(e.name.as_str())
            .bind(e.namespace.as_str())
            .bind(enum_str(&e.workload))
            .bind(enum_str(&e.target))
            .bind(i32::try_from(e.replicas).unwrap_or(i32::MAX))
            .bind(&env.actor)
            .bind(at)
            .execute(&mut **tx)
            .await?;
        }
        EventPayload::DeploymentRendered(e) => {
            deployment_status(tx, e.deployment_id.0, "rendered", None, None, at).await?;
        }
        EventPayload::DeploymentApplied(e) => {
            deployment_status(
                tx,
                e.deployment_id.0,
                "applied",
                None,
                Some(&e.revision),
                at,
            )
            .await?;
        }
        EventPayload::DeploymentFailed(e) => {
            deployment_status(tx, e.deployment_id.0, "failed", Some(&e.reason), None, at).await?;
        }
        EventPayload::DeploymentDeleted(e) => {
            deployment_status(
                tx,
                e.deployment_id.0,
                "deleted",
                None,
                e.revision.as_deref(),
                at,
            )
            .await?;
        }
    }
    Ok(())
}

async fn deployment_status(
    tx: &mut Transaction<'_, Postgres>,
    id: Uuid,
    status: &str,
    detail: Option<&str>,
    revision: Option<&str>,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    // A deleted deployment stays deleted.
    sqlx::query(
        "UPDATE deployments SET status = $2, status_detail = $3, revision = COALESCE($4, revision),
            updated_at = $5 WHERE id = $1 AND status <> 'deleted'",
    )
    .bind(id)
    .bind(status)
    .bind(detail)
    .bind(revision)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn label(
    tx: &mut Transaction<'_, Postgres>,
    target: &CatalogTarget,
    hm_tag: &str,
    present: bool,
    seq: i64,
    env: &Envelope,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    let (repo_id, tag) = target_key(target);
    sqlx::query(
        "INSERT INTO hm_labels (repo_id, tag, hm_tag, present, actor, at, sequence) VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (repo_id, tag, hm_tag) DO UPDATE SET present = EXCLUDED.present, actor = EXCLUDED.actor,
            at = EXCLUDED.at, sequence = EXCLUDED.sequence
         WHERE hm_labels.sequence < EXCLUDED.sequence",
    )
    .bind(repo_id)
    .bind(&tag)
    .bind(hm_tag)
    .bind(present)
    .bind(&env.actor)
    .bind(at)
    .bind(seq)
    .execute(&mut **tx)
    .await?;
    // The derived arrays, recomputed whether or not this event won: the result only
    // depends on the labels table, so it converges however events interleave.
    if tag.is_empty() {
        sqlx::query(&format!(
            "UPDATE repositories r SET curator_hm_tags = c.tags, hm_tags = {}
             FROM (SELECT COALESCE(array_agg(hm_tag ORDER BY hm_tag) FILTER (WHERE present), '{{}}') AS tags
                   FROM hm_labels WHERE repo_id = $1 AND tag = '') c
             WHERE r.id = $1",
            union_sql("r.rule_hm_tags", "c.tags")
        ))
        .bind(repo_id)
        .execute(&mut **tx)
        .await?;
    } else {
        sqlx::query(
            "UPDATE tag_versions SET hm_tags = (
                SELECT COALESCE(array_agg(hm_tag ORDER BY hm_tag) FILTER (WHERE present), '{}')
                FROM hm_labels WHERE repo_id = $1 AND tag = $2)
             WHERE repo_id = $1 AND tag = $2 AND valid_to IS NULL",
        )
        .bind(repo_id)
        .bind(&tag)
        .execute(&mut **tx)
        .await?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn decide(
    tx: &mut Transaction<'_, Postgres>,
    target: &CatalogTarget,
    decision: &str,
    digest: Option<&str>,
    reason: &str,
    seq: i64,
    env: &Envelope,
    at: chrono::DateTime<chrono::Utc>,
) -> Result<(), sqlx::Error> {
    let (repo_id, tag) = target_key(target);
    sqlx::query(
        "INSERT INTO approvals (repo_id, tag, decision, digest, reason, actor, at, sequence)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         ON CONFLICT (repo_id, tag) DO UPDATE SET decision = EXCLUDED.decision, digest = EXCLUDED.digest,
            reason = EXCLUDED.reason, actor = EXCLUDED.actor, at = EXCLUDED.at, sequence = EXCLUDED.sequence
         WHERE approvals.sequence < EXCLUDED.sequence",
    )
    .bind(repo_id)
    .bind(&tag)
    .bind(decision)
    .bind(if tag.is_empty() { None } else { digest })
    .bind(reason)
    .bind(&env.actor)
    .bind(at)
    .bind(seq)
    .execute(&mut **tx)
    .await?;
    sqlx::query(RECOMPUTE_APPROVAL)
        .bind(repo_id)
        .bind(if tag.is_empty() { None } else { Some(tag) })
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn recompute_registry_rules(
    tx: &mut Transaction<'_, Postgres>,
    registry: RegistryId,
    rules: &mut RulesCtx<'_>,
) -> Result<(), sqlx::Error> {
    let index = rules.get(tx, registry).await?;
    let repos: Vec<(Uuid, String)> =
        sqlx::query_as("SELECT id, name FROM repositories WHERE registry_id = $1")
            .bind(registry.0)
            .fetch_all(&mut **tx)
            .await?;
    write_rule_info(tx, &index, &repos).await
}

/// Set the governing rule's description and HM tags on `repos` (id, name).
pub(crate) async fn write_rule_info(
    tx: &mut Transaction<'_, Postgres>,
    index: &RuleSetIndex,
    repos: &[(Uuid, String)],
) -> Result<(), sqlx::Error> {
    if repos.is_empty() {
        return Ok(());
    }
    let mut ids = Vec::with_capacity(repos.len());
    let mut rule_ids: Vec<Option<String>> = Vec::with_capacity(repos.len());
    let mut descriptions = Vec::with_capacity(repos.len());
    let mut hm = Vec::with_capacity(repos.len());
    for (id, name) in repos {
        let Ok(name) = name.parse::<RepositoryName>() else {
            continue;
        };
        ids.push(*id);
        match index.primary_rule(&name) {
            Some(rule) => {
                let mut tags: Vec<&str> = rule.hm_tags().iter().map(|t| t.as_str()).collect();
                tags.sort_unstable();
                tags.dedup();
                rule_ids.push(Some(rule.id().to_string()));
                descriptions.push(rule.description().to_owned());
                hm.push(array_literal(&tags));
            }
            None => {
                rule_ids.push(None);
                descriptions.push(String::new());
                hm.push("{}".to_owned());
            }
        }
    }
    sqlx::query(&format!(
        "UPDATE repositories r SET rule_id = u.rule_id, rule_description = u.description,
            rule_hm_tags = u.hm::text[], hm_tags = {}, search = {}
         FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[]) AS u(id, rule_id, description, hm)
         WHERE r.id = u.id AND (r.rule_id IS DISTINCT FROM u.rule_id
            OR r.rule_description <> u.description OR r.rule_hm_tags <> u.hm::text[])",
        union_sql("u.hm::text[]", "r.curator_hm_tags"),
        search_sql("r.name", "u.description", "r.oci_description")
    ))
    .bind(&ids)
    .bind(&rule_ids)
    .bind(&descriptions)
    .bind(&hm)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
