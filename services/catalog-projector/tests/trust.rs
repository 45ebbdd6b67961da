//! Trust in the catalog (issue 13) against a real NATS JetStream and PostgreSQL: each
//! trust event projected onto the tags of its digest (and, for reports and SBOMs, of the
//! index whose platform manifest it is), the list filters, the counters, the repository's
//! referrers, deployments' violations; newest report wins, referrers_changed replaces the
//! list, a policy flips; replays in any batching and redelivery give the same rows.

mod common;

use std::time::Duration;

use catalog_projector::config::CatalogSettings;
use catalog_projector::projection::{Item, Projection};
use catalog_projector::rebuild::{RebuildReport, rebuild, replay_into};
use common::*;
use imagelib_events::event::DeploymentPolicyViolated;
use imagelib_events::model::{
    ImageKind, PolicyFinding, PolicyReason, PolicyVerdict, ReferrerKind, SbomFormat, ViolationStage,
};
use imagelib_events::{DeploymentId, Envelope, RegistryId};
use serde_json::{Value, json};

const REPO: &str = "apps/web";

fn single() -> imagelib_events::model::ImageDetails {
    details(ImageKind::Other, None, &["amd64"], 1000)
}

/// Tags: `1.0` and `latest` at digest 1, `multi` at index 2 (platforms 21, 22), `plain` at
/// 3; evidence for 1, 2, 21 and 22.
fn scenario(reg: RegistryId) -> Vec<Envelope> {
    vec![
        registered(reg, "Acme", &[]),
        discovered(reg, REPO, "1.0", 1, single()),
        discovered(reg, REPO, "latest", 1, single()),
        discovered(reg, REPO, "multi", 2, multi_arch(&["amd64", "arm64"], 21)),
        discovered(reg, REPO, "plain", 3, single()),
        sig_verified(reg, REPO, 1, 101, "SHA256:key-abc"),
        sig_failed(reg, REPO, 1, 102, "certificate expired"),
        vulns(
            reg,
            REPO,
            1,
            103,
            "trivy",
            "2025-01-15T00:00:00Z",
            [0, 2, 1, 0, 3],
        ),
        sbom(reg, REPO, 1, 104, SbomFormat::Spdx),
        evaluated(
            reg,
            REPO,
            1,
            PolicyVerdict::Fail,
            &[PolicyReason::SeverityAboveLimit],
        ),
        referrers_changed(
            reg,
            REPO,
            1,
            vec![
                referrer(
                    101,
                    ReferrerKind::Signature,
                    "application/vnd.dev.cosign.simplesigning.v1+json",
                ),
                referrer(
                    102,
                    ReferrerKind::Signature,
                    "application/vnd.dev.cosign.simplesigning.v1+json",
                ),
                referrer(
                    103,
                    ReferrerKind::Attestation,
                    "application/vnd.dsse.envelope.v1+json",
                ),
                referrer(104, ReferrerKind::Sbom, "application/spdx+json"),
            ],
        ),
        sig_failed(reg, REPO, 2, 201, "signature does not match the payload"),
        vulns(
            reg,
            REPO,
            21,
            211,
            "trivy",
            "2025-01-15T00:00:00Z",
            [1, 0, 0, 0, 0],
        ),
        vulns(
            reg,
            REPO,
            22,
            221,
            "trivy",
            "2025-01-15T00:00:00Z",
            [0, 0, 0, 1, 0],
        ),
        sbom(reg, REPO, 22, 222, SbomFormat::Cyclonedx),
        evaluated(
            reg,
            REPO,
            2,
            PolicyVerdict::Audit,
            &[
                PolicyReason::SignatureInvalid,
                PolicyReason::SeverityAboveLimit,
            ],
        ),
    ]
}

/// `tag → item` of the listing at `path`.
async fn tags_at(svc: &Service, path: &str) -> Vec<String> {
    let mut tags: Vec<String> = svc
        .all_pages(Some(ADMIN), path)
        .await
        .iter()
        .map(|i| i["tag"].as_str().unwrap().to_owned())
        .collect();
    tags.sort();
    tags
}

async fn item(svc: &Service, tag: &str) -> Value {
    let items = svc
        .all_pages(Some(ADMIN), &format!("/v1/images?repository={REPO}"))
        .await;
    items
        .into_iter()
        .find(|i| i["tag"] == tag)
        .unwrap_or_else(|| panic!("no tag {tag}"))
}

#[tokio::test]
async fn each_trust_event_shows_on_the_tags_of_its_digest_with_filters_and_counters() {
    let env = Env::new().await;
    let reg = RegistryId::new();
    env.publish(scenario(reg)).await;
    let svc = env.start().await;
    env.caught_up().await;

    let one = item(&svc, "1.0").await;
    let t = &one["trust"];
    assert_eq!(t["signed"], true, "{t}");
    let sigs = t["signatures"].as_array().unwrap();
    assert_eq!(sigs.len(), 2, "{t}");
    assert_eq!(sigs[0]["source"], digest(101).to_string());
    assert_eq!(sigs[0]["verified"], true);
    assert_eq!(sigs[0]["signer"], "SHA256:key-abc");
    assert_eq!(sigs[0]["kind"], "cosign");
    assert_eq!(sigs[0]["policy"], "apps");
    assert_eq!(sigs[1]["verified"], false);
    assert_eq!(sigs[1]["reason"], "certificate expired");
    assert_eq!(
        sigs[1]["issuer"],
        "https://token.actions.githubusercontent.com"
    );
    let v = &t["vulnerabilities"];
    assert_eq!(
        (
            &v["critical"],
            &v["high"],
            &v["medium"],
            &v["low"],
            &v["unknown"],
            &v["fixable"]
        ),
        (
            &json!(0),
            &json!(2),
            &json!(1),
            &json!(0),
            &json!(3),
            &json!(2)
        ),
        "{v}"
    );
    assert_eq!(v["scanner"], "trivy");
    assert_eq!(v["scanner_version"], "0.58.1");
    assert_eq!(v["db"], "2025-01-14T06:00:00Z");
    assert_eq!(v["scanned_at"], "2025-01-15T00:00:00Z");
    assert_eq!(v["reports"][0]["source"], digest(103).to_string());
    assert_eq!(t["max_severity"], "high");
    assert_eq!(t["sbom"], json!(["spdx"]));
    assert_eq!(t["policy"]["verdict"], "fail");
    assert_eq!(t["policy"]["reasons"], json!(["severity_above_limit"]));
    assert_eq!(t["policy"]["rule"], "apps");
    assert_eq!(t["policy"]["findings"][0]["reason"], "severity_above_limit");
    assert_eq!(one["referrers"].as_array().unwrap().len(), 4, "{one}");
    // Another tag at the same digest shows the same.
    assert_eq!(item(&svc, "latest").await["trust"], *t);

    // The index: its own signature and verdict, its platforms' reports and SBOMs.
    let multi = item(&svc, "multi").await;
    let t = &multi["trust"];
    assert_eq!(t["signed"], false, "{t}");
    assert_eq!(t["signatures"][0]["verified"], false);
    assert_eq!(t["vulnerabilities"]["critical"], 1, "{t}");
    assert_eq!(t["vulnerabilities"]["low"], 1, "{t}");
    assert_eq!(t["vulnerabilities"]["reports"].as_array().unwrap().len(), 2);
    assert_eq!(t["max_severity"], "critical");
    assert_eq!(t["sbom"], json!(["cyclonedx"]));
    assert_eq!(t["policy"]["verdict"], "audit");
    assert_eq!(
        t["policy"]["reasons"],
        json!(["signature_invalid", "severity_above_limit"])
    );

    // Nothing known: not signed, no report, no SBOM, no verdict.
    let plain = item(&svc, "plain").await;
    assert_eq!(
        plain["trust"],
        json!({"signed": false, "signatures": [], "vulnerabilities": null,
               "max_severity": null, "sbom": [], "policy": null})
    );

    // Filters, each value (the Model Library takes them too).
    let cases: &[(&str, &[&str])] = &[
        ("signed=true", &["1.0", "latest"]),
        ("signed=false", &["multi", "plain"]),
        ("max_severity=critical", &["1.0", "latest", "multi"]),
        ("max_severity=high", &["1.0", "latest"]),
        ("max_severity=medium", &[]),
        ("max_severity=low", &[]),
        ("max_severity=none", &[]),
        ("has_sbom=true", &["1.0", "latest", "multi"]),
        ("has_sbom=false", &["plain"]),
        ("policy=fail", &["1.0", "latest"]),
        ("policy=audit", &["multi"]),
        ("policy=pass", &[]),
        ("signed=true&policy=fail&has_sbom=true", &["1.0", "latest"]),
    ];
    for (q, want) in cases {
        assert_eq!(
            tags_at(&svc, &format!("/v1/images?{q}&limit=1")).await,
            *want,
            "{q}"
        );
    }
    assert_eq!(
        svc.get("/v1/models?signed=true").await["items"],
        json!([]),
        "no model here"
    );
    for (q, param) in [
        ("signed=yes", "signed"),
        ("max_severity=severe", "max_severity"),
        ("max_severity=unknown", "max_severity"),
        ("has_sbom=1", "has_sbom"),
        ("policy=ok", "policy"),
    ] {
        let (status, p) = svc
            .call(
                reqwest::Method::GET,
                &format!("/v1/images?{q}"),
                Some(ADMIN),
                None,
            )
            .await;
        assert_eq!(status, 422, "{q}: {p}");
        assert_eq!(p["errors"][0]["pointer"], param, "{q}: {p}");
        let (status, _) = svc
            .call(
                reqwest::Method::GET,
                &format!("/v1/models?{q}"),
                Some(ADMIN),
                None,
            )
            .await;
        assert_eq!(status, 422, "{q}");
    }

    // Counters.
    let stats = svc.get("/v1/stats").await;
    assert_eq!(stats["tags"], 4, "{stats}");
    assert_eq!(stats["signed"], 2, "{stats}");
    assert_eq!(stats["unsigned"], 2, "{stats}");
    assert_eq!(stats["with_sbom"], 3, "{stats}");
    assert_eq!(
        stats["by_max_severity"],
        json!({"critical": 1, "high": 2, "medium": 0, "low": 0, "none": 0})
    );
    assert_eq!(stats["policy"], json!({"pass": 0, "fail": 2, "audit": 1}));

    // The repository lists the referrers of each digest, platform manifests included.
    let detail = svc.get(&format!("/v1/repositories/{reg}/{REPO}")).await;
    let refs = detail["referrers"].as_array().unwrap();
    let of = |d: u64| {
        refs.iter()
            .find(|r| r["digest"] == digest(d).to_string())
            .unwrap_or_else(|| panic!("digest {d} not listed: {detail}"))
    };
    assert_eq!(of(1)["tags"], json!(["1.0", "latest"]));
    assert_eq!(of(1)["platform"], Value::Null);
    let listed = of(1)["referrers"].as_array().unwrap();
    assert_eq!(listed.len(), 4);
    assert_eq!(listed[0]["kind"], "signature");
    assert_eq!(
        listed[3],
        json!({"digest": digest(104).to_string(), "kind": "sbom",
               "artifact_type": "application/spdx+json"})
    );
    assert_eq!(of(21)["platform"], "linux/amd64");
    assert_eq!(of(22)["tags"], json!(["multi"]));
    assert_eq!(of(3)["referrers"], json!([]));
    assert_eq!(refs.len(), 5, "1, 2, 21, 22, 3");
    assert_eq!(detail["tags"][0]["trust"]["signed"], true);

    // OpenAPI documents the object and the filters.
    let api = svc.get("/openapi.json").await;
    let schemas = &api["components"]["schemas"];
    assert!(
        schemas["TrustView"]["properties"]["max_severity"].is_object(),
        "{schemas}"
    );
    let params: Vec<&str> = api["paths"]["/v1/images"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect();
    for p in ["signed", "max_severity", "has_sbom", "policy"] {
        assert!(params.contains(&p), "{params:?}");
    }
    svc.stop().await;
}

#[tokio::test]
async fn newest_report_wins_referrers_replace_the_list_policies_flip_and_moves_follow_the_digest() {
    let env = Env::new().await;
    let reg = RegistryId::new();
    env.publish(scenario(reg)).await;
    let svc = env.start().await;
    env.caught_up().await;

    // An older report of the same scanner, published later, changes nothing.
    env.publish([vulns(
        reg,
        REPO,
        1,
        105,
        "trivy",
        "2025-01-10T00:00:00Z",
        [5, 0, 0, 0, 0],
    )])
    .await;
    env.caught_up().await;
    let t = item(&svc, "1.0").await["trust"].clone();
    assert_eq!(t["max_severity"], "high", "{t}");
    assert_eq!(t["vulnerabilities"]["critical"], 0, "{t}");
    // A newer one replaces it; another scanner's report combines with it.
    env.publish([
        vulns(
            reg,
            REPO,
            1,
            106,
            "trivy",
            "2025-01-20T00:00:00Z",
            [0, 0, 0, 1, 0],
        ),
        vulns(
            reg,
            REPO,
            1,
            107,
            "grype",
            "2025-01-18T00:00:00Z",
            [0, 0, 1, 0, 0],
        ),
    ])
    .await;
    env.caught_up().await;
    let t = item(&svc, "1.0").await["trust"].clone();
    assert_eq!(t["max_severity"], "medium", "{t}");
    let v = &t["vulnerabilities"];
    assert_eq!(
        (&v["high"], &v["medium"], &v["low"]),
        (&json!(0), &json!(1), &json!(1)),
        "{v}"
    );
    assert_eq!(v["scanner"], "trivy", "the newest scan: {v}");
    assert_eq!(v["scanned_at"], "2025-01-20T00:00:00Z");
    assert_eq!(v["reports"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(
        tags_at(&svc, "/v1/images?max_severity=medium").await,
        ["1.0", "latest"]
    );

    // The policy flips from fail to pass.
    env.publish([evaluated(reg, REPO, 1, PolicyVerdict::Pass, &[])])
        .await;
    env.caught_up().await;
    let t = item(&svc, "1.0").await["trust"].clone();
    assert_eq!(t["policy"]["verdict"], "pass", "{t}");
    assert_eq!(t["policy"]["reasons"], json!([]));
    assert_eq!(
        tags_at(&svc, "/v1/images?policy=pass").await,
        ["1.0", "latest"]
    );
    assert_eq!(
        tags_at(&svc, "/v1/images?policy=fail").await,
        Vec::<String>::new()
    );
    assert_eq!(
        svc.get("/v1/stats").await["policy"],
        json!({"pass": 2, "fail": 0, "audit": 1})
    );

    // The referrers are listed anew: the failed signature and the SBOM are gone from the
    // registry, so from the tag too.
    let new_list = vec![
        referrer(
            101,
            ReferrerKind::Signature,
            "application/vnd.dev.cosign.simplesigning.v1+json",
        ),
        referrer(
            106,
            ReferrerKind::Attestation,
            "application/vnd.dsse.envelope.v1+json",
        ),
        referrer(
            107,
            ReferrerKind::Attestation,
            "application/vnd.dsse.envelope.v1+json",
        ),
    ];
    env.publish([referrers_changed(reg, REPO, 1, new_list.clone())])
        .await;
    env.caught_up().await;
    let one = item(&svc, "1.0").await;
    assert_eq!(one["referrers"], serde_json::to_value(&new_list).unwrap());
    let t = &one["trust"];
    assert_eq!(t["signatures"].as_array().unwrap().len(), 1, "{t}");
    assert_eq!(t["signed"], true);
    assert_eq!(t["sbom"], json!([]), "{t}");
    assert_eq!(t["max_severity"], "medium", "reports 106 and 107 stay");
    let detail = svc.get(&format!("/v1/repositories/{reg}/{REPO}")).await;
    let d1 = detail["referrers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["digest"] == digest(1).to_string())
        .unwrap()
        .clone();
    assert_eq!(d1["referrers"].as_array().unwrap().len(), 3, "{d1}");
    assert_eq!(tags_at(&svc, "/v1/images?has_sbom=true").await, ["multi"]);

    // A tag moving to a digest with evidence shows it at once; evidence recorded before
    // any tag points at its digest shows when one does.
    env.publish([
        moved(reg, REPO, "plain", 3, 1, single()),
        sig_verified(reg, REPO, 9, 901, "SHA256:key-later"),
        discovered(reg, REPO, "late", 9, single()),
    ])
    .await;
    env.caught_up().await;
    assert_eq!(item(&svc, "plain").await["trust"], one["trust"]);
    assert_eq!(item(&svc, "late").await["trust"]["signed"], true);
    assert_eq!(
        tags_at(&svc, "/v1/images?signed=true").await,
        ["1.0", "late", "latest", "plain"]
    );

    // A deployment's violation shows on it.
    let dep = DeploymentId::new();
    env.publish([
        deployment_requested(dep, reg, REPO, "1.0", 1),
        envelope(
            "serving-deployer",
            DeploymentPolicyViolated {
                deployment_id: dep,
                digest: digest(1),
                reasons: vec![PolicyReason::SeverityAboveLimit],
                stage: ViolationStage::Running,
                policy: Some("apps".parse().unwrap()),
                findings: vec![PolicyFinding {
                    reason: PolicyReason::SeverityAboveLimit,
                    detail: "CVE-2025-0001 (critical)".into(),
                }],
            },
        ),
    ])
    .await;
    env.caught_up().await;
    let detail = svc.get(&format!("/v1/repositories/{reg}/{REPO}")).await;
    let v = &detail["used_by"][0]["policy_violation"];
    assert_eq!(v["stage"], "running", "{detail}");
    assert_eq!(v["reasons"], json!(["severity_above_limit"]));
    assert_eq!(v["findings"][0]["detail"], "CVE-2025-0001 (critical)");
    assert_eq!(v["rule"], "apps");
    assert_eq!(v["digest"], digest(1).to_string());
    assert_eq!(
        detail["tags"][0]["used_by"][0]["policy_violation"]["stage"],
        "running"
    );
    svc.stop().await;
}

/// A bulk replay in batches of several repositories, their events interleaved, with
/// evidence, moves, removals and registry events between them, gives the live consumer's
/// rows.
#[tokio::test]
async fn a_bulk_replay_of_many_repositories_in_batches_gives_the_live_rows() {
    let env = Env::new().await;
    let reg = RegistryId::new();
    let other = RegistryId::new();
    let repos: Vec<String> = (0..12).map(|i| format!("apps/svc-{i:02}")).collect();
    let mut events = vec![registered(reg, "Acme", &[])];
    for round in 0..3u64 {
        for (i, repo) in repos.iter().enumerate() {
            let d = 10 * i as u64 + round;
            match round {
                0 => {
                    events.push(discovered(reg, repo, "1.0", d, single()));
                    events.push(discovered(reg, repo, "latest", d, single()));
                }
                1 => {
                    events.push(sig_verified(reg, repo, d - 1, 500 + d, "SHA256:key"));
                    events.push(moved(reg, repo, "latest", d - 1, d, single()));
                }
                _ => {
                    events.push(evaluated(reg, repo, d - 1, PolicyVerdict::Pass, &[]));
                    if i % 3 == 0 {
                        events.push(removed(reg, repo, "1.0", d - 2));
                    }
                }
            }
            if i == 5 {
                // An event of another aggregate among the image events.
                events.push(registered(other, &format!("Other {round}"), &[]));
            }
        }
    }
    env.publish(events).await;
    let svc = env.start().await;
    env.caught_up().await;
    let live = env.dump("catalog").await;
    svc.stop().await;
    assert!(live.contains("apps/svc-11"), "{live}");
    for batch in [7, 64] {
        same(
            &env.bulk_replay_in_batches(&format!("batched_bulk_{batch}"), batch)
                .await,
            &live,
        );
    }
}

#[tokio::test]
async fn replays_in_any_batching_and_redelivery_give_the_same_trust_rows() {
    let env = Env::new().await;
    let reg = RegistryId::new();
    let mut events = scenario(reg);
    // Evidence first, then the tags; a later list, report, flip and move.
    events.insert(1, sig_verified(reg, REPO, 5, 501, "SHA256:early"));
    events.extend([
        discovered(reg, REPO, "early", 5, single()),
        vulns(
            reg,
            REPO,
            1,
            106,
            "trivy",
            "2025-01-20T00:00:00Z",
            [0, 0, 0, 1, 0],
        ),
        evaluated(reg, REPO, 1, PolicyVerdict::Pass, &[]),
        referrers_changed(
            reg,
            REPO,
            1,
            vec![referrer(
                101,
                ReferrerKind::Signature,
                "application/vnd.dev.cosign.simplesigning.v1+json",
            )],
        ),
        moved(
            reg,
            REPO,
            "plain",
            3,
            2,
            multi_arch(&["amd64", "arm64"], 21),
        ),
        // A tag event whose referrers list comes after a referrers_changed of its digest.
        discovered(reg, REPO, "relisted", 1, {
            let mut d = single();
            d.referrers = vec![referrer(101, ReferrerKind::Signature, "x")];
            d
        }),
    ]);
    let seqs = env.publish(events).await;
    let svc = env.start().await;
    env.caught_up().await;
    let live = env.dump("catalog").await;
    assert!(live.contains("SHA256:early"), "{live}");
    assert_eq!(item(&svc, "early").await["trust"]["signed"], true);
    svc.stop().await;

    // One event per transaction into a fresh schema.
    let one_by_one = imagelib_platform::db::connect(&env.db.url, "trust_one_by_one", 4)
        .await
        .unwrap();
    catalog_projector::startup::migrate(&one_by_one)
        .await
        .unwrap();
    let settings = CatalogSettings {
        batch_size: 1,
        ..Default::default()
    };
    let mut r = RebuildReport {
        position: 0,
        events: 0,
        skipped: 0,
        old_schema: None,
        elapsed: Duration::ZERO,
        indexes_built_after: Vec::new(),
    };
    let last = env.bus.last_sequence().await.unwrap();
    replay_into(
        &env.bus,
        &Projection::new(one_by_one.clone()),
        &settings,
        last,
        &mut r,
    )
    .await
    .unwrap();
    same(&env.dump("trust_one_by_one").await, &live);

    // A rebuild (in memory, large batches) swapped in: the same rows.
    let keep = CatalogSettings {
        keep_old_schema: true,
        ..Default::default()
    };
    let report = rebuild(&env.bus, &env.db.url, catalog_projector::SCHEMA, &keep)
        .await
        .unwrap();
    same(&env.dump("catalog").await, &live);
    same(&env.dump(&report.old_schema.unwrap()).await, &live);
    // The rebuild's load one event per batch: the same rows.
    same(&env.bulk_replay_by_one("trust_bulk_by_one").await, &live);
    same(
        &env.bulk_replay_in_batches("trust_bulk_batched", 64).await,
        &live,
    );

    // Redelivery of the trust events, even past the recorded position (a consumer
    // recreated from older state), changes nothing.
    let first_trust = seqs[1];
    let mut replay = env.bus.replay(first_trust, Some(last), None).await.unwrap();
    let mut items = Vec::new();
    while let Some(i) = replay.next().await {
        let i = i.unwrap();
        let env = i.event.unwrap();
        if catalog_projector::projection::trust::is_evidence(&env.payload) {
            items.push(Item {
                sequence: i.sequence,
                envelope: Some(env),
            });
        }
    }
    assert!(items.len() > 10, "{}", items.len());
    let projection = Projection::new(one_by_one.clone());
    sqlx::query("UPDATE stream_position SET sequence = $1")
        .bind(first_trust as i64 - 1)
        .execute(&one_by_one)
        .await
        .unwrap();
    projection.apply_batch(&items, None).await.unwrap();
    sqlx::query("UPDATE stream_position SET sequence = $1")
        .bind(last as i64)
        .execute(&one_by_one)
        .await
        .unwrap();
    same(&env.dump("trust_one_by_one").await, &live);
}

/// GET as admin with `If-None-Match`: the status and the ETag.
async fn etag_of(svc: &Service, path: &str, if_none_match: Option<&str>) -> (u16, String) {
    let mut req = svc.http.get(svc.url(path)).bearer_auth(ADMIN);
    if let Some(tag) = if_none_match {
        req = req.header("if-none-match", tag);
    }
    let res = req.send().await.unwrap();
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    (res.status().as_u16(), etag)
}

#[tokio::test]
async fn trust_counters_follow_visibility_and_a_trust_event_changes_the_etag() {
    let env = Env::new().await;
    let public = RegistryId::new();
    let db_only = RegistryId::new();
    env.publish([
        registered(public, "Public", &[]),
        registered(db_only, "DB team", &["db"]),
        discovered(public, REPO, "1.0", 1, single()),
        discovered(db_only, REPO, "1.0", 1, single()),
        sig_verified(public, REPO, 1, 101, "SHA256:pub"),
        sig_verified(db_only, REPO, 1, 102, "SHA256:db"),
        sbom(db_only, REPO, 1, 103, SbomFormat::Cyclonedx),
        evaluated(
            db_only,
            REPO,
            1,
            PolicyVerdict::Fail,
            &[PolicyReason::NoSbom],
        ),
    ])
    .await;
    let svc = env.start().await;
    env.caught_up().await;

    // The same digest in two registries: evidence is per registry and repository.
    let all = svc.get("/v1/stats").await;
    assert_eq!(
        (&all["signed"], &all["with_sbom"], &all["policy"]["fail"]),
        (&json!(2), &json!(1), &json!(1)),
        "{all}"
    );
    let ml = svc.get_as(Some(VIEWER_ML), "/v1/stats").await;
    assert_eq!(
        (
            &ml["tags"],
            &ml["signed"],
            &ml["unsigned"],
            &ml["with_sbom"]
        ),
        (&json!(1), &json!(1), &json!(0), &json!(0)),
        "{ml}"
    );
    assert_eq!(ml["policy"], json!({"pass": 0, "fail": 0, "audit": 0}));
    let items = svc
        .all_pages(Some(VIEWER_ML), "/v1/images?signed=true")
        .await;
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["trust"]["signatures"][0]["signer"], "SHA256:pub");
    assert_eq!(items[0]["trust"]["sbom"], json!([]));

    // A trust event changes the representation, so the ETag: no stale 304.
    let path = format!("/v1/images?registry={public}");
    let (status, tag) = etag_of(&svc, &path, None).await;
    assert_eq!(status, 200);
    assert_eq!(etag_of(&svc, &path, Some(&tag)).await.0, 304);
    env.publish([vulns(
        public,
        REPO,
        1,
        104,
        "trivy",
        "2025-01-15T00:00:00Z",
        [1, 0, 0, 0, 0],
    )])
    .await;
    env.caught_up().await;
    let (status, new_tag) = etag_of(&svc, &path, Some(&tag)).await;
    assert_eq!(status, 200);
    assert_ne!(new_tag, tag);
    assert_eq!(
        svc.get(&path).await["items"][0]["trust"]["max_severity"],
        "critical"
    );
    svc.stop().await;
}
