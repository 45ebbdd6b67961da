//! Retention policies on repository rules (issue 14): accepted, carried by `rule.set`, shown
//! so that `GET` then `PUT` round-trips, refused with the pointer of the bad field (and no
//! event), documented in the OpenAPI document.

mod common;

use common::{ADMIN, Env};
use imagelib_events::EventPayload;
use imagelib_events::model::{HmTag, RetentionScope, RetentionTemplate, TagPattern};
use imagelib_testkit::registry::TestRegistry;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn a_rule_with_a_retention_policy_is_stored_emitted_shown_and_refused_when_bad() {
    let env = Env::new();
    let svc = env.start().await;
    let registry = TestRegistry::start().await.unwrap();
    let r = svc.register_open(&registry, "retention").await;
    let id = r["id"].as_str().unwrap();
    let path = format!("/v1/registries/{id}/rules/apps");
    let retention = json!({
        "rules": [
            {"template": "latest_pushed", "count": 5, "per": "major", "tags": {"include": ["^[0-9]"]}},
            {"template": "pulled_within_days", "days": 30},
        ],
    });
    let (s, saved, _) = svc
        .call(
            Method::PUT,
            &path,
            Some(ADMIN),
            Some(json!({"repositories": "apps/*", "retention": retention})),
        )
        .await;
    assert_eq!(s, 200, "{saved}");
    assert_eq!(
        saved["retention"],
        json!({
            "rules": [
                {"template": "latest_pushed", "count": 5, "per": "major",
                 "tags": {"include": [{"regex": "^[0-9]"}], "exclude": []}},
                {"template": "pulled_within_days", "days": 30, "per": "repository",
                 "tags": {"include": [], "exclude": []}},
            ],
            "protect_hm_tags": ["approved-production"],
        }),
        "{saved}"
    );
    let (s, got) = svc.get(&path).await;
    assert_eq!(s, 200);
    assert_eq!(got, saved);

    // The event carries the policy as the contract has it.
    let rule = env
        .events()
        .await
        .into_iter()
        .find_map(|e| match e.payload {
            EventPayload::RuleSet(r) => Some(r),
            _ => None,
        })
        .expect("a rule.set event");
    let policy = rule.retention.expect("the policy in rule.set");
    assert_eq!(policy.rules[0].template, RetentionTemplate::LatestPushed);
    assert_eq!(policy.rules[0].count, Some(5));
    assert_eq!(policy.rules[0].per, RetentionScope::Major);
    assert_eq!(
        policy.rules[0].tags.include,
        vec![TagPattern::Regex("^[0-9]".into())]
    );
    assert_eq!(policy.rules[1].days, Some(30));
    assert_eq!(policy.protect_hm_tags, vec![HmTag::approved_production()]);

    // What GET shows goes back through PUT as it is.
    let (s, again, _) = svc
        .call(Method::PUT, &path, Some(ADMIN), Some(got.clone()))
        .await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again, got);

    // Bad policies: 422 with the pointer, and nothing emitted.
    let before = env.event_types().await.len();
    for (retention, pointer, needle) in [
        (
            json!({"rules": [{"template": "latest_pushed"}]}),
            "/retention/rules/0/count",
            "set `count`",
        ),
        (
            json!({"rules": [{"template": "always", "days": 3}]}),
            "/retention/rules/0/days",
            "takes no parameter",
        ),
        (
            json!({"rules": [{"template": "pushed_within_days", "days": 40000}]}),
            "/retention/rules/0/days",
            "out of range",
        ),
        (
            json!({"rules": vec![json!({"template": "always"}); 16]}),
            "/retention/rules",
            "at most 15",
        ),
        (
            json!({"rules": [{"template": "always", "tags": {"exclude": ["("]}}]}),
            "/retention/rules/0/tags/exclude/0",
            "invalid regular expression",
        ),
        (
            json!({"rules": [{"template": "sometimes"}]}),
            "/retention/rules/0/template",
            "unknown variant",
        ),
        (
            json!({"rules": []}),
            "/retention/rules",
            "at least one rule",
        ),
    ] {
        let (s, p, _) = svc
            .call(
                Method::PUT,
                &path,
                Some(ADMIN),
                Some(json!({"repositories": "apps/*", "retention": retention})),
            )
            .await;
        assert_eq!(s, 422, "{retention}: {p}");
        assert_eq!(p["errors"][0]["pointer"], pointer, "{retention}: {p}");
        assert!(
            p["detail"].as_str().unwrap_or("").contains(needle),
            "{retention}: {p}"
        );
    }
    assert_eq!(env.event_types().await.len(), before);

    // Dropping `retention` removes the policy.
    let (s, plain, _) = svc
        .call(
            Method::PUT,
            &path,
            Some(ADMIN),
            Some(json!({"repositories": "apps/*"})),
        )
        .await;
    assert_eq!(s, 200);
    assert!(plain.get("retention").is_none(), "{plain}");

    // Documented.
    let (s, api) = svc.get("/openapi.json").await;
    assert_eq!(s, 200);
    let schemas = &api["components"]["schemas"];
    assert!(schemas["RuleInputDoc"]["properties"]["retention"].is_object());
    for field in ["template", "count", "days", "per", "tags"] {
        assert!(
            schemas["RetentionRuleDoc"]["properties"][field].is_object(),
            "{field}"
        );
    }
    assert!(schemas["RetentionPolicyDoc"]["properties"]["protect_hm_tags"].is_object());
}
