//! Lifecycle previews (issue 14) against a real NATS JetStream and PostgreSQL: a rule's
//! retention policy evaluated over the catalog the events built (push times from image
//! creation or first sight, pulls from `image.pulls_counted`, deployments, curator
//! approvals and HM tags), checked against a hand-computed expectation; per-major grouping,
//! shared digests, the repository filter, visibility and bad input.

mod common;

use chrono::{DateTime, Duration, Utc};
use common::*;
use imagelib_events::event::{DeploymentDeleted, PullsCounted, RuleSet};
use imagelib_events::model::*;
use imagelib_events::{DeploymentId, Envelope, RegistryId};
use reqwest::Method;
use serde_json::{Value, json};

/// `e` at `days` days before `now`.
fn days_before(mut e: Envelope, now: DateTime<Utc>, days: i64) -> Envelope {
    e.time = now - Duration::days(days);
    e
}

/// An image of `size` bytes; `created` days before `now` (None: no creation time).
fn image(size: u64, created: Option<i64>, now: DateTime<Utc>) -> ImageDetails {
    let mut d = details(ImageKind::Other, None, &["amd64"], size);
    d.created = created.map(|c| now - Duration::days(c));
    d
}

fn pulled(
    reg: RegistryId,
    repository: &str,
    tag: &str,
    d: u64,
    last: i64,
    now: DateTime<Utc>,
) -> Envelope {
    envelope(
        "registry-registry",
        PullsCounted {
            registry_id: reg,
            repository: repo(repository),
            tag: Some(tag.parse().unwrap()),
            digest: digest(d),
            pulls: 3,
            first_pulled_at: now - Duration::days(last + 1),
            last_pulled_at: now - Duration::days(last),
        },
    )
}

fn retention_rule(reg: RegistryId, id: &str, retention: Option<Value>) -> Envelope {
    envelope(
        "registry-registry",
        RuleSet {
            registry_id: reg,
            rule_id: id.parse().unwrap(),
            repositories: vec![RepositoryPattern::Glob("apps/*".into())],
            tags: TagSelector {
                exclude: vec![TagPattern::Regex("-rc".into())],
                exclude_artifact_tags: true,
                ..TagSelector::default()
            },
            kind: RuleKind::Auto,
            description: String::new(),
            hm_tags: vec![],
            enabled: true,
            trust: None,
            retention: retention.map(|r| serde_json::from_value(r).unwrap()),
        },
    )
}

/// Keep the 2 most recently pushed per major version of the tags starting with a digit,
/// what was pulled within 30 days, and always `latest`.
fn policy() -> Value {
    json!({"rules": [
        {"template": "latest_pushed", "count": 2, "per": "major", "tags": {"include": [{"regex": "^[0-9]"}]}},
        {"template": "pulled_within_days", "days": 30},
        {"template": "always", "tags": {"include": [{"exact": "latest"}]}},
    ]})
}

/// The catalog of the hand-computed example (days before now; `c` = pushed by the image's
/// creation time, the event a day ago; otherwise first seen then, without a creation time):
///
/// | repo:tag | digest | size | pushed | pulled (digest) | other |
/// |---|---|---|---|---|---|
/// | web:1.0.0 | 1 | 100 | 200 | – | deployment deleted |
/// | web:1.0 | 1 | 100 | 199 | – | |
/// | web:1.1.0 | 2 | 110 | 150 c | 100 | |
/// | web:1.2.0 | 3 | 120 | 100 c | – | deployed |
/// | web:1.3.0 | 4 | 130 | 60 | 5 | |
/// | web:stable | 4 | 130 | 60 | 5 (1.3.0's digest) | |
/// | web:2.0.0 | 5 | 200 | 40 | – | approved |
/// | web:2.1.0 | 6 | 210 | 20 | – | |
/// | web:candidate | 6 | 210 | 20 | – | |
/// | web:2.2.0 | 7 | 220 | 10 | 2 | |
/// | web:latest | 7 | 220 | 10 | 1 | |
/// | web:dev-abc | 8 | 50 | 90 | – | HM approved-production |
/// | web:dev-def | 9 | 60 | 80 | – | |
/// | web:2.3.0-rc1 | 9 | 60 | 5 | – | not the rule's (`-rc` excluded) |
/// | api:3.0.0 | 20 | 300 | 300 | – | |
/// | api:3.1.0 | 21 | 310 | 250 | – | |
/// | api:3.2.0 | 22 | 320 | 5 | – | |
/// | other/x:1.0 | 30 | 999 | 900 | – | not a repository of the rule |
///
/// - rule 0, web major 1 by push: 1.3.0, 1.2.0 kept; 1.1.0, 1.0, 1.0.0 not; major 2:
///   2.2.0, 2.1.0 kept, 2.0.0 not; api major 3: 3.2.0, 3.1.0 kept, 3.0.0 not;
/// - rule 1 (pulls are per digest): 1.3.0, stable (5), 2.2.0, latest kept; 1.1.0 (100) not;
/// - rule 2: latest; protected: 1.2.0 (deployed), 2.0.0 (approved), dev-abc (HM).
///
/// Going: web:1.0.0 and web:1.0 (digest 1, together: 100), web:1.1.0 (2: 110),
/// web:candidate (6, kept by 2.1.0: nothing), web:dev-def (9, kept by the rc tag: nothing),
/// api:3.0.0 (20: 300). Freed: 3 digests, 510 bytes.
async fn catalog(env: &Env, reg: RegistryId, now: DateTime<Utc>) {
    let web = "apps/web";
    let mut events = vec![registered(reg, "Acme", &["ml"])];
    for (tag, d, size, days, by_created) in [
        ("1.0.0", 1, 100, 200, false),
        ("1.0", 1, 100, 199, false),
        ("1.1.0", 2, 110, 150, true),
        ("1.2.0", 3, 120, 100, true),
        ("1.3.0", 4, 130, 60, false),
        ("stable", 4, 130, 60, false),
        ("2.0.0", 5, 200, 40, false),
        ("2.1.0", 6, 210, 20, false),
        ("candidate", 6, 210, 20, false),
        ("2.2.0", 7, 220, 10, false),
        ("latest", 7, 220, 10, false),
        ("dev-abc", 8, 50, 90, false),
        ("dev-def", 9, 60, 80, false),
        ("2.3.0-rc1", 9, 60, 5, false),
    ] {
        let e = if by_created {
            days_before(
                discovered(reg, web, tag, d, image(size, Some(days), now)),
                now,
                1,
            )
        } else {
            days_before(
                discovered(reg, web, tag, d, image(size, None, now)),
                now,
                days,
            )
        };
        events.push(e);
    }
    for (tag, d, size, days) in [
        ("3.0.0", 20, 300, 300),
        ("3.1.0", 21, 310, 250),
        ("3.2.0", 22, 320, 5),
    ] {
        events.push(days_before(
            discovered(reg, "apps/api", tag, d, image(size, None, now)),
            now,
            days,
        ));
    }
    // A creation time after the tag was first seen is not believed: first seen it is.
    events.push(days_before(
        discovered(reg, "other/x", "1.0", 30, image(999, Some(0), now)),
        now,
        900,
    ));
    events.push(pulled(reg, web, "1.1.0", 2, 100, now));
    events.push(pulled(reg, web, "1.3.0", 4, 5, now));
    events.push(pulled(reg, web, "2.2.0", 7, 2, now));
    events.push(pulled(reg, web, "latest", 7, 1, now));
    events.push(deployment_requested(
        DeploymentId::new(),
        reg,
        web,
        "1.2.0",
        3,
    ));
    let gone = DeploymentId::new();
    events.push(deployment_requested(gone, reg, web, "1.0.0", 1));
    events.push(envelope(
        "serving-deployer",
        DeploymentDeleted {
            deployment_id: gone,
            revision: None,
        },
    ));
    events.push(retention_rule(reg, "apps", Some(policy())));
    events.push(retention_rule(reg, "plain", None));
    env.publish(events).await;
}

fn preview_path(reg: RegistryId, rule: &str) -> String {
    format!("/v1/lifecycle/preview?registry={reg}&rule={rule}")
}

fn refs(items: &Value) -> Vec<String> {
    items
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}:{}",
                i["repository"].as_str().unwrap(),
                i["tag"].as_str().unwrap()
            )
        })
        .collect()
}

fn item<'a>(items: &'a Value, repo_tag: &str) -> &'a Value {
    items
        .as_array()
        .unwrap()
        .iter()
        .find(|i| {
            format!(
                "{}:{}",
                i["repository"].as_str().unwrap(),
                i["tag"].as_str().unwrap()
            ) == repo_tag
        })
        .unwrap_or_else(|| panic!("no {repo_tag} in {items}"))
}

fn codes(item: &Value) -> Vec<(String, Value)> {
    item["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["code"].as_str().unwrap().to_owned(), r["rule"].clone()))
        .collect()
}

fn code(c: &str, rule: Option<u64>) -> (String, Value) {
    (c.to_owned(), rule.map_or(Value::Null, Value::from))
}

async fn curate(svc: &Service, reg: RegistryId) {
    let repo = format!("/v1/repositories/{reg}/apps/web");
    let (s, b) = svc
        .call(
            Method::POST,
            &format!("{repo}/approve"),
            Some(CURATOR_ML),
            Some(json!({"tag": "2.0.0", "reason": "released"})),
        )
        .await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = svc
        .call(
            Method::PUT,
            &format!("{repo}/hm-tags/approved-production?tag=dev-abc"),
            Some(CURATOR_ML),
            None,
        )
        .await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn a_preview_matches_the_hand_computed_expectation() {
    let env = Env::new().await;
    let reg = RegistryId::new();
    let now = Utc::now();
    catalog(&env, reg, now).await;
    let svc = env.start().await;
    env.caught_up().await;
    curate(&svc, reg).await;

    let p = svc
        .get_as(
            Some(VIEWER_ML),
            &format!("{}&include=kept", preview_path(reg, "apps")),
        )
        .await;
    assert_eq!(p["registry_id"], reg.to_string());
    assert_eq!(p["registry"], "Acme");
    assert_eq!(p["registry_url"], "acme.registry.example:5000");
    assert_eq!(p["rule_id"], "apps");
    assert_eq!(p["retention"]["rules"][0]["per"], "major");
    assert_eq!(p["warnings"], json!([]), "{p}");
    assert_eq!(
        refs(&p["going"]),
        [
            "apps/api:3.0.0",
            "apps/web:1.0",
            "apps/web:1.0.0",
            "apps/web:1.1.0",
            "apps/web:candidate",
            "apps/web:dev-def",
        ]
    );
    assert_eq!(
        refs(&p["kept"]),
        [
            "apps/api:3.1.0",
            "apps/api:3.2.0",
            "apps/web:1.2.0",
            "apps/web:1.3.0",
            "apps/web:2.0.0",
            "apps/web:2.1.0",
            "apps/web:2.2.0",
            "apps/web:dev-abc",
            "apps/web:latest",
            "apps/web:stable",
        ]
    );
    assert_eq!(
        p["summary"],
        json!({"tags": 16, "kept": 10, "going": 6, "not_selected": 1,
               "digests_freed": 3, "bytes_freed": 510})
    );

    // The going tags: reasons, sizes, push times and what shares their digest.
    let going = &p["going"];
    let t = item(going, "apps/web:1.0.0");
    assert_eq!(t["size"], 100);
    assert_eq!(t["digest"], digest(1).to_string());
    assert_eq!(t["pushed_from"], "first_seen");
    assert_eq!(
        codes(t),
        [
            code("latest_pushed", Some(0)),
            code("pulled_within_days", Some(1))
        ]
    );
    assert_eq!(
        t["reasons"][0]["message"],
        "rule 0 (latest_pushed 2 per major version): 5th most recently pushed of 5 of major \
         version 1 in apps/web, after the 2 it keeps"
    );
    assert_eq!(t["frees_digest"], true);
    assert_eq!(t["digest_shared_with"], json!(["1.0"]));
    assert!(t.get("digest_kept_by").is_none(), "{t}");
    let t = item(going, "apps/web:1.1.0");
    assert_eq!(t["pushed_from"], "created");
    let pushed: DateTime<Utc> = t["pushed_at"].as_str().unwrap().parse().unwrap();
    assert!(
        (now - pushed - Duration::days(150)).num_seconds().abs() < 5,
        "{t}"
    );
    assert!(t["last_pulled_at"].is_string(), "{t}");
    assert_eq!(
        t["reasons"][1]["message"],
        "rule 1 (pulled_within_days 30 days): last pulled 100 days ago, before the last 30 days"
    );
    let t = item(going, "apps/web:candidate");
    assert_eq!(codes(t), [code("pulled_within_days", Some(1))]);
    assert_eq!(t["frees_digest"], false);
    assert_eq!(t["digest_kept_by"], json!(["2.1.0"]));
    let t = item(going, "apps/web:dev-def");
    assert_eq!(t["digest_kept_by"], json!(["2.3.0-rc1"]));
    let t = item(going, "apps/api:3.0.0");
    assert_eq!(
        t["reasons"][0]["message"],
        "rule 0 (latest_pushed 2 per major version): 3rd most recently pushed of 3 of major \
         version 3 in apps/api, after the 2 it keeps"
    );

    // The kept ones: protections first, then every rule that keeps them.
    let kept = &p["kept"];
    assert_eq!(
        codes(item(kept, "apps/web:1.2.0")),
        [code("deployed", None), code("latest_pushed", Some(0))]
    );
    assert_eq!(
        item(kept, "apps/web:1.2.0")["reasons"][0]["message"],
        "used by deployment models/llama"
    );
    assert_eq!(
        codes(item(kept, "apps/web:2.0.0")),
        [code("approved", None)]
    );
    assert_eq!(
        codes(item(kept, "apps/web:dev-abc")),
        [code("protected_hm_tag", None)]
    );
    assert_eq!(
        codes(item(kept, "apps/web:stable")),
        [code("pulled_within_days", Some(1))]
    );
    assert_eq!(
        codes(item(kept, "apps/web:latest")),
        [code("pulled_within_days", Some(1)), code("always", Some(2))]
    );
    assert!(item(kept, "apps/web:latest").get("frees_digest").is_none());

    // Without `include=kept` only what goes; one repository with `repository`.
    let p = svc.get(&preview_path(reg, "apps")).await;
    assert!(p.get("kept").is_none(), "{p}");
    assert_eq!(p["summary"]["going"], 6);
    let p = svc
        .get(&format!(
            "{}&repository=apps/api",
            preview_path(reg, "apps")
        ))
        .await;
    assert_eq!(refs(&p["going"]), ["apps/api:3.0.0"]);
    assert_eq!(p["summary"]["bytes_freed"], 300);

    // Nothing was deleted or changed: the catalog still lists every tag.
    let all = svc
        .all_pages(Some(ADMIN), &format!("/v1/images?registry={reg}"))
        .await;
    assert_eq!(all.len(), 18);
    svc.stop().await;
}

#[tokio::test]
async fn a_changed_policy_is_previewed_at_once_and_pull_rules_without_pulls_are_flagged() {
    let env = Env::new().await;
    let reg = RegistryId::new();
    let now = Utc::now();
    env.publish(vec![
        registered(reg, "Acme", &[]),
        days_before(
            discovered(reg, "apps/a", "1.0", 1, image(10, None, now)),
            now,
            3,
        ),
        days_before(
            discovered(reg, "apps/a", "1.1", 2, image(20, None, now)),
            now,
            2,
        ),
        days_before(
            discovered(reg, "apps/a", "2.0", 3, image(30, None, now)),
            now,
            1,
        ),
        retention_rule(
            reg,
            "apps",
            Some(json!({"rules": [{"template": "latest_pushed", "count": 1}]})),
        ),
    ])
    .await;
    let svc = env.start().await;
    env.caught_up().await;
    let p = svc.get(&preview_path(reg, "apps")).await;
    assert_eq!(refs(&p["going"]), ["apps/a:1.0", "apps/a:1.1"]);
    assert_eq!(p["summary"]["bytes_freed"], 30);

    // Per major version: 1.1 is the newest of major 1.
    env.publish(vec![retention_rule(
        reg,
        "apps",
        Some(json!({"rules": [{"template": "latest_pushed", "count": 1, "per": "major"}]})),
    )])
    .await;
    env.caught_up().await;
    let p = svc.get(&preview_path(reg, "apps")).await;
    assert_eq!(refs(&p["going"]), ["apps/a:1.0"]);

    // A pull-based policy on a registry that never reported a pull keeps nothing, and says
    // why.
    env.publish(vec![retention_rule(
        reg,
        "apps",
        Some(json!({"rules": [{"template": "latest_pulled", "count": 5}]})),
    )])
    .await;
    env.caught_up().await;
    let p = svc.get(&preview_path(reg, "apps")).await;
    assert_eq!(p["summary"]["going"], 3);
    assert_eq!(
        p["going"][0]["reasons"][0]["message"],
        "rule 0 (latest_pulled 5 per repository): never pulled"
    );
    let warnings = p["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{p}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("no pull of these tags"),
        "{p}"
    );
    svc.stop().await;
}

#[tokio::test]
async fn bad_input_unknown_things_and_rules_without_a_policy_are_problems() {
    let env = Env::new().await;
    let reg = RegistryId::new();
    let hidden = RegistryId::new();
    let now = Utc::now();
    catalog(&env, reg, now).await;
    env.publish(vec![
        registered(hidden, "Databases", &["db"]),
        retention_rule(hidden, "apps", Some(policy())),
    ])
    .await;
    let svc = env.start().await;
    env.caught_up().await;

    let problem = |expected: u16, path: String, token: Option<&'static str>| {
        let svc = &svc;
        async move {
            let (s, p) = svc.call(Method::GET, &path, token, None).await;
            assert_eq!(s, expected, "{path}: {p}");
            assert_eq!(p["status"], expected, "{p}");
            assert!(p["type"].as_str().unwrap().starts_with("https://"), "{p}");
            p
        }
    };
    let p = problem(422, "/v1/lifecycle/preview?rule=apps".into(), Some(ADMIN)).await;
    assert_eq!(p["errors"][0]["pointer"], "registry");
    let p = problem(
        422,
        "/v1/lifecycle/preview?registry=nope&rule=apps".into(),
        Some(ADMIN),
    )
    .await;
    assert_eq!(p["errors"][0]["pointer"], "registry");
    let p = problem(
        422,
        format!("/v1/lifecycle/preview?registry={reg}"),
        Some(ADMIN),
    )
    .await;
    assert_eq!(p["errors"][0]["pointer"], "rule");
    let p = problem(
        422,
        format!("/v1/lifecycle/preview?registry={reg}&rule=Not%20A%20Rule"),
        Some(ADMIN),
    )
    .await;
    assert_eq!(p["errors"][0]["pointer"], "rule");
    let p = problem(
        422,
        format!("{}&include=everything", preview_path(reg, "apps")),
        Some(ADMIN),
    )
    .await;
    assert_eq!(p["errors"][0]["pointer"], "include");
    let p = problem(
        422,
        format!("{}&repository=Not..A..Name", preview_path(reg, "apps")),
        Some(ADMIN),
    )
    .await;
    assert_eq!(p["errors"][0]["pointer"], "repository");
    problem(
        400,
        format!("{}&limit=5", preview_path(reg, "apps")),
        Some(ADMIN),
    )
    .await;

    let p = problem(404, preview_path(RegistryId::new(), "apps"), Some(ADMIN)).await;
    assert_eq!(p["code"], "not-found");
    let p = problem(404, preview_path(reg, "nope"), Some(ADMIN)).await;
    assert!(
        p["detail"].as_str().unwrap().contains("has no rule `nope`"),
        "{p}"
    );
    let p = problem(409, preview_path(reg, "plain"), Some(ADMIN)).await;
    assert_eq!(p["code"], "no-retention");
    assert!(
        p["detail"]
            .as_str()
            .unwrap()
            .contains("set `retention` on the rule"),
        "{p}"
    );
    // A registry of another team does not exist for this viewer; it does for an admin.
    problem(404, preview_path(hidden, "apps"), Some(VIEWER_ML)).await;
    problem(404, preview_path(reg, "apps"), Some(VIEWER_DB)).await;
    let p = svc.get(&preview_path(hidden, "apps")).await;
    assert_eq!(p["summary"]["tags"], 0);

    // Documented.
    let api = svc.get("/openapi.json").await;
    let op = &api["paths"]["/v1/lifecycle/preview"]["get"];
    assert!(op.is_object(), "{}", api["paths"]);
    for code in ["200", "404", "409", "422"] {
        assert!(op["responses"][code].is_object(), "{code}: {op}");
    }
    svc.stop().await;
}
