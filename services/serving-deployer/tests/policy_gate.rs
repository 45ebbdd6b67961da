//! The deploy gate (issue 13): the scanner's trust verdicts and the rules' policy modes,
//! through the stream, decide whether an image deploys; a verdict that turns after a deploy
//! flags the running deployment and leaves it running.

mod common;

use std::time::Duration;

use common::{DEPLOYER, Env, Service, VIEWER};
use imagelib_events::model::{ImageKind, PolicyMode, PolicyReason, PolicyVerdict, ViolationStage};
use imagelib_events::{Digest, RegistryId};
use reqwest::Method;
use serde_json::{Value, json};

fn body(registry: RegistryId, repo: &str, tag: &str, name: &str) -> Value {
    json!({"image": format!("{registry}/{repo}:{tag}"), "name": name, "namespace": "models"})
}

/// Deploy once the deployer's view has everything published so far.
async fn deploy_settled(env: &Env, svc: &Service, b: Value) -> (u16, Value) {
    env.settled().await;
    svc.deploy(b).await
}

async fn eventually<F, Fut>(what: &str, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..200 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting until {what}");
}

/// A registry with a model tag under a rule in `mode`; the rule is published before the
/// tag, so once the tag is in the view the rule is too.
async fn covered(env: &Env, mode: Option<PolicyMode>) -> (RegistryId, Digest) {
    let reg = env.registry(&[]).await;
    env.rule(reg, "prod", "acme/**", mode).await;
    let digest = env.tag(reg, "acme/llm", "1.0", ImageKind::Model, &[]).await;
    (reg, digest)
}

#[tokio::test]
async fn an_enforce_failure_is_refused_with_each_reason_and_nothing_is_applied() {
    let env = Env::new();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let api = common::fake_api_server(seen.clone()).await;
    let token = env.dir.path().join("token");
    std::fs::write(&token, "k8s-token\n").unwrap();
    let mut config = env.config();
    config.deployer.kubernetes_api = Some(format!("http://{api}"));
    config.deployer.kubernetes_token_file = Some(token);
    let svc = env.start_with(config).await;
    let (reg, digest) = covered(&env, Some(PolicyMode::Enforce)).await;
    env.verdict(
        reg,
        "acme/llm",
        &digest,
        PolicyVerdict::Fail,
        "prod",
        &[
            (PolicyReason::Unsigned, "no signature referrer"),
            (
                PolicyReason::SeverityAboveLimit,
                "CVE-2024-1234 (critical) is above high",
            ),
            (PolicyReason::NoSbom, "no SPDX or CycloneDX SBOM"),
        ],
    )
    .await;
    let commits = env.commit_count();
    let (s, p) = deploy_settled(&env, &svc, body(reg, "acme/llm", "1.0", "llm")).await;
    assert_eq!(s, 403, "{p}");
    assert_eq!(p["code"], "policy-violation", "{p}");
    assert_eq!(p["status"], 403);
    assert_eq!(p["type"], "https://imagelib.dev/problems/policy-violation");
    assert_eq!(
        p["reasons"],
        json!(["unsigned", "severity_above_limit", "no_sbom"])
    );
    assert_eq!(
        p["findings"][1],
        json!({"reason": "severity_above_limit", "detail": "CVE-2024-1234 (critical) is above high"})
    );
    assert_eq!(p["policy"], "prod");
    assert_eq!(p["digest"], digest.as_str());
    let detail = p["detail"].as_str().unwrap();
    for words in [
        "unsigned",
        "severity above the limit",
        "no SBOM",
        "CVE-2024-1234",
        "prod",
    ] {
        assert!(detail.contains(words), "{words:?} not in {detail}");
    }

    // The content type of a problem, and nothing deployed, rendered or committed.
    let res = svc
        .http
        .post(svc.url("/v1/deployments"))
        .bearer_auth(DEPLOYER)
        .json(&body(reg, "acme/llm", "1.0", "llm"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
    assert_eq!(
        res.headers()["content-type"],
        "application/problem+json",
        "an RFC 9457 problem"
    );
    // The kubernetes target is refused alike, before any request reaches the API server.
    let mut k8s = body(reg, "acme/llm", "1.0", "llm-k8s");
    k8s["target"] = json!("kubernetes");
    let (s, p) = svc.deploy(k8s).await;
    assert_eq!(s, 403, "{p}");
    assert!(seen.lock().unwrap().is_empty(), "nothing applied");
    assert_eq!(env.commit_count(), commits);
    assert!(!env.gitops().join("models/llm.yaml").exists());
    let types = env.event_types().await;
    assert!(
        !types
            .iter()
            .any(|t| t.starts_with("io.imagelib.deployment.")),
        "{types:?}"
    );
    let (_, page) = svc
        .call(Method::GET, "/v1/deployments", Some(DEPLOYER), None)
        .await;
    assert_eq!(page["items"], json!([]));

    // Postgres provisioning goes through the same gate.
    let db = env
        .tag(reg, "acme/postgres", "16.4", ImageKind::Database, &[])
        .await;
    env.verdict(
        reg,
        "acme/postgres",
        &db,
        PolicyVerdict::Fail,
        "prod",
        &[(PolicyReason::SignerNotTrusted, "signed by key 3f2a…")],
    )
    .await;
    env.settled().await;
    let last = svc
        .call(
            Method::POST,
            "/v1/provisioning/postgres",
            Some(DEPLOYER),
            Some(body(reg, "acme/postgres", "16.4", "pg")),
        )
        .await;
    assert_eq!(last.0, 403, "{}", last.1);
    assert_eq!(last.1["reasons"], json!(["signer_not_trusted"]));
}

#[tokio::test]
async fn no_verdict_yet_under_enforce_is_pending_until_the_scanner_passes_it() {
    let env = Env::new();
    let svc = env.start().await;
    let (reg, digest) = covered(&env, Some(PolicyMode::Enforce)).await;
    let (s, p) = deploy_settled(&env, &svc, body(reg, "acme/llm", "1.0", "llm")).await;
    assert_eq!(s, 409, "{p}");
    assert_eq!(p["code"], "policy-pending");
    assert!(
        p["detail"].as_str().unwrap().contains("not evaluated yet"),
        "{p}"
    );
    assert!(!env.gitops().join("models/llm.yaml").exists());

    env.verdict(reg, "acme/llm", &digest, PolicyVerdict::Pass, "prod", &[])
        .await;
    let (s, d) = deploy_settled(&env, &svc, body(reg, "acme/llm", "1.0", "llm")).await;
    assert_eq!(s, 201, "{d}");
    assert_eq!(d["state"], "applied");
    assert_eq!(d["policy_violations"], json!([]));
    assert!(env.gitops().join("models/llm.yaml").exists());
    assert!(env.violations().await.is_empty());

    // The OpenAPI document describes the refusal's shape.
    let (_, api) = svc.call(Method::GET, "/openapi.json", None, None).await;
    let schema = api["components"]["schemas"]["PolicyProblem"].to_string();
    for field in ["reasons", "findings", "policy", "digest", "detail"] {
        assert!(schema.contains(field), "{field} missing from {schema}");
    }
    let post = &api["paths"]["/v1/deployments"]["post"]["responses"];
    assert!(post["403"].to_string().contains("PolicyProblem"), "{post}");
    assert!(post["409"].to_string().contains("policy-pending"), "{post}");
    let view = api["components"]["schemas"]["DeploymentView"]["properties"]["policy_violations"]
        .to_string();
    assert!(view.contains("PolicyViolation"), "{view}");
}

#[tokio::test]
async fn an_audit_failure_deploys_and_records_the_violation() {
    let env = Env::new();
    let svc = env.start().await;
    let (reg, digest) = covered(&env, Some(PolicyMode::Audit)).await;
    env.verdict(
        reg,
        "acme/llm",
        &digest,
        PolicyVerdict::Audit,
        "prod",
        &[(PolicyReason::NoVulnerabilityReport, "no report attached")],
    )
    .await;
    let (s, d) = deploy_settled(&env, &svc, body(reg, "acme/llm", "1.0", "llm")).await;
    assert_eq!(s, 201, "{d}");
    assert_eq!(d["state"], "applied", "deployed anyway: {d}");
    assert!(env.gitops().join("models/llm.yaml").exists());
    let v = &d["policy_violations"][0];
    assert_eq!(v["stage"], "audited");
    assert_eq!(v["reasons"], json!(["no_vulnerability_report"]));
    assert_eq!(v["findings"][0]["detail"], "no report attached");
    assert_eq!(v["policy"], "prod");
    assert_eq!(v["digest"], digest.as_str());

    let events = env.violations().await;
    let last = events.last().unwrap();
    assert_eq!(last.stage, ViolationStage::Audited);
    assert_eq!(last.reasons, [PolicyReason::NoVulnerabilityReport]);
    assert_eq!(last.digest, digest);
    assert_eq!(last.deployment_id.to_string(), d["id"].as_str().unwrap());

    // Everyone who sees the deployment sees its violations.
    let id = d["id"].as_str().unwrap();
    let (s, shown) = svc
        .call(
            Method::GET,
            &format!("/v1/deployments/{id}"),
            Some(VIEWER),
            None,
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(shown["policy_violations"], d["policy_violations"]);
}

#[tokio::test]
async fn a_pass_or_no_policy_deploys_as_before() {
    let env = Env::new();
    let svc = env.start().await;
    let reg = env.registry(&[]).await;
    // Rule order decides: `a` (no policy) matches first but has none, `b` enforces, `c`
    // would only audit; `d` turns the policy of `acme/off/*` off.
    env.rule(reg, "a-plain", "acme/**", None).await;
    env.rule(reg, "b-enforce", "acme/**", Some(PolicyMode::Enforce))
        .await;
    env.rule(reg, "c-audit", "acme/**", Some(PolicyMode::Audit))
        .await;
    env.rule(reg, "0-off", "acme/off/*", Some(PolicyMode::Off))
        .await;
    let passing = env.tag(reg, "acme/llm", "1.0", ImageKind::Model, &[]).await;
    env.verdict(
        reg,
        "acme/llm",
        &passing,
        PolicyVerdict::Pass,
        "b-enforce",
        &[],
    )
    .await;
    let failing = env.tag(reg, "acme/bad", "1.0", ImageKind::Model, &[]).await;
    let unsigned = [(PolicyReason::Unsigned, "no signature")];
    env.verdict(
        reg,
        "acme/bad",
        &failing,
        PolicyVerdict::Fail,
        "b-enforce",
        &unsigned,
    )
    .await;
    let off = env
        .tag(reg, "acme/off/llm", "1.0", ImageKind::Model, &[])
        .await;
    env.verdict(
        reg,
        "acme/off/llm",
        &off,
        PolicyVerdict::Fail,
        "b-enforce",
        &unsigned,
    )
    .await;
    let outside = env
        .tag(reg, "other/llm", "1.0", ImageKind::Model, &[])
        .await;
    env.verdict(
        reg,
        "other/llm",
        &outside,
        PolicyVerdict::Fail,
        "x",
        &unsigned,
    )
    .await;

    let (s, p) = deploy_settled(&env, &svc, body(reg, "acme/bad", "1.0", "bad")).await;
    assert_eq!(s, 403, "b-enforce governs, not c-audit: {p}");
    assert_eq!(p["policy"], "b-enforce");
    let (s, d) = deploy_settled(&env, &svc, body(reg, "acme/llm", "1.0", "llm")).await;
    assert_eq!(s, 201, "{d}");
    assert_eq!(d["state"], "applied");
    assert_eq!(d["policy_violations"], json!([]));
    let (s, d) = deploy_settled(&env, &svc, body(reg, "acme/off/llm", "1.0", "off")).await;
    assert_eq!(s, 201, "a policy turned off lifts the gate: {d}");
    let (s, d) = deploy_settled(&env, &svc, body(reg, "other/llm", "1.0", "other")).await;
    assert_eq!(s, 201, "no rule with a policy covers it: {d}");
    assert_eq!(d["policy_violations"], json!([]));
    assert!(env.violations().await.is_empty());

    // Removing the enforcing rule leaves c-audit governing: the failing image deploys,
    // flagged.
    env.publish(imagelib_events::event::RuleRemoved {
        registry_id: reg,
        rule_id: "b-enforce".parse().unwrap(),
    })
    .await;
    let (s, d) = deploy_settled(&env, &svc, body(reg, "acme/bad", "1.0", "bad")).await;
    assert_eq!(s, 201, "{d}");
    assert_eq!(d["policy_violations"][0]["stage"], "audited");
    assert_eq!(d["policy_violations"][0]["reasons"], json!(["unsigned"]));
}

#[tokio::test]
async fn a_running_deployment_whose_image_turns_failing_is_flagged_once_and_left_running() {
    let env = Env::new();
    let svc = env.start().await;
    let (reg, digest) = covered(&env, Some(PolicyMode::Enforce)).await;
    env.verdict(reg, "acme/llm", &digest, PolicyVerdict::Pass, "prod", &[])
        .await;
    let (s, d) = deploy_settled(&env, &svc, body(reg, "acme/llm", "1.0", "llm")).await;
    assert_eq!(s, 201, "{d}");
    let id = d["id"].as_str().unwrap().to_owned();
    let commits = env.commit_count();
    let file = std::fs::read_to_string(env.gitops().join("models/llm.yaml")).unwrap();

    // A new report: the digest now fails.
    env.verdict(
        reg,
        "acme/llm",
        &digest,
        PolicyVerdict::Fail,
        "prod",
        &[(PolicyReason::SeverityAboveLimit, "CVE-2026-0001 (critical)")],
    )
    .await;
    eventually("a running violation is recorded", || async {
        !env.violations().await.is_empty()
    })
    .await;
    let events = env.violations().await;
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].stage, ViolationStage::Running);
    assert_eq!(events[0].reasons, [PolicyReason::SeverityAboveLimit]);
    assert_eq!(events[0].digest, digest);
    assert_eq!(events[0].policy.as_ref().unwrap().as_str(), "prod");

    let get = |id: String| {
        let svc = &svc;
        async move {
            svc.call(
                Method::GET,
                &format!("/v1/deployments/{id}"),
                Some(DEPLOYER),
                None,
            )
            .await
            .1
        }
    };
    let now = get(id.clone()).await;
    assert_eq!(now["state"], "applied", "left running: {now}");
    assert_eq!(now["revision"], d["revision"]);
    assert_eq!(now["history"], d["history"], "no new step");
    assert_eq!(now["policy_violations"][0]["stage"], "running");
    assert_eq!(
        now["policy_violations"][0]["findings"][0]["detail"],
        "CVE-2026-0001 (critical)"
    );
    assert_eq!(env.commit_count(), commits, "nothing re-committed");
    assert_eq!(
        std::fs::read_to_string(env.gitops().join("models/llm.yaml")).unwrap(),
        file
    );

    // Still failing (another report): the same change, not flagged again.
    env.verdict(
        reg,
        "acme/llm",
        &digest,
        PolicyVerdict::Fail,
        "prod",
        &[
            (PolicyReason::SeverityAboveLimit, "CVE-2026-0001 (critical)"),
            (PolicyReason::NoSbom, "none"),
        ],
    )
    .await;
    env.settled().await;
    // The watch runs on each applied verdict; give it time to (wrongly) act.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(env.violations().await.len(), 1, "once per change");

    // Passing again, then failing again: a new change, flagged again.
    env.verdict(reg, "acme/llm", &digest, PolicyVerdict::Pass, "prod", &[])
        .await;
    env.verdict(
        reg,
        "acme/llm",
        &digest,
        PolicyVerdict::Fail,
        "prod",
        &[(PolicyReason::Unsigned, "signature removed")],
    )
    .await;
    eventually("the second change is flagged", || async {
        env.violations().await.len() == 2
    })
    .await;
    let events = env.violations().await;
    assert_eq!(events[1].reasons, [PolicyReason::Unsigned]);
    assert_eq!(get(id.clone()).await["state"], "applied");

    // A deleted deployment is not flagged.
    svc.call(
        Method::DELETE,
        &format!("/v1/deployments/{id}"),
        Some(DEPLOYER),
        None,
    )
    .await;
    env.verdict(reg, "acme/llm", &digest, PolicyVerdict::Pass, "prod", &[])
        .await;
    env.verdict(
        reg,
        "acme/llm",
        &digest,
        PolicyVerdict::Fail,
        "prod",
        &[(PolicyReason::Unsigned, "again")],
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(env.violations().await.len(), 2);
}

#[tokio::test]
async fn a_rebuilt_view_flags_nothing_twice() {
    let env = Env::new();
    let (reg, digest) = {
        let svc = env.start().await;
        let (reg, digest) = covered(&env, Some(PolicyMode::Enforce)).await;
        env.verdict(reg, "acme/llm", &digest, PolicyVerdict::Pass, "prod", &[])
            .await;
        let (s, d) = deploy_settled(&env, &svc, body(reg, "acme/llm", "1.0", "llm")).await;
        assert_eq!(s, 201, "{d}");
        env.verdict(
            reg,
            "acme/llm",
            &digest,
            PolicyVerdict::Fail,
            "prod",
            &[(PolicyReason::Unsigned, "no signature")],
        )
        .await;
        eventually("the running violation is recorded", || async {
            env.violations().await.len() == 1
        })
        .await;
        (reg, digest)
    };
    // A second deployer on an empty database of its own rebuilds from the stream.
    let db = imagelib_testkit::TestDb::new();
    let mut config = env.config();
    config.common.database_url = db.url.clone();
    config.common.gitops_dir = env.dir.path().join("gitops-2");
    let svc = env.start_with(config).await;
    env.settled_in(&db.url).await;
    let (_, page) = svc
        .call(Method::GET, "/v1/deployments", Some(DEPLOYER), None)
        .await;
    let d = &page["items"][0];
    assert_eq!(d["state"], "applied", "{page}");
    assert_eq!(d["policy_violations"][0]["stage"], "running");
    assert_eq!(d["policy_violations"][0]["digest"], digest.as_str());
    // The rebuilt verdict still refuses a new deployment of the failing digest.
    let (s, p) = svc.deploy(body(reg, "acme/llm", "1.0", "llm-2")).await;
    assert_eq!(s, 403, "{p}");
    // Another verdict wakes the watch of the caught-up view: still nothing new to flag.
    let other = env.tag(reg, "acme/x", "1", ImageKind::Model, &[]).await;
    env.verdict(reg, "acme/x", &other, PolicyVerdict::Pass, "prod", &[])
        .await;
    env.settled_in(&db.url).await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(env.violations().await.len(), 1, "nothing flagged twice");
}

#[tokio::test]
async fn malformed_trust_events_are_dead_lettered_and_the_consumers_go_on() {
    let env = Env::new();
    let svc = env.start().await;
    let reg = env.registry(&[]).await;
    let bus = env.bus().await;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Content-Type", "application/cloudevents+json");
    let image_subject = format!(
        "{}.image.{}.policy_evaluated",
        env.stream.prefix,
        uuid::Uuid::new_v4()
    );
    // A verdict with a reason outside the closed set.
    let bad_reason = json!({"specversion": "1.0", "id": uuid::Uuid::now_v7().to_string(),
        "source": "/elsewhere", "type": "io.imagelib.image.policy_evaluated.v1",
        "datacontenttype": "application/json",
        "data": {"registry_id": reg, "repository": "acme/llm",
            "digest": format!("sha256:{}", "a".repeat(64)), "verdict": "fail", "reasons": ["looks_bad"]}});
    bus.publish_raw(
        &image_subject,
        headers.clone(),
        bytes::Bytes::from(bad_reason.to_string()),
        "poison-verdict",
    )
    .await
    .unwrap();
    // A verdict that is not JSON.
    bus.publish_raw(
        &image_subject,
        headers.clone(),
        bytes::Bytes::from_static(b"{\"verdict\": \"fail\""),
        "poison-json",
    )
    .await
    .unwrap();
    // A rule whose trust policy has an unknown mode.
    let rule_subject = format!("{}.rule.{}.set", env.stream.prefix, reg);
    let bad_rule = json!({"specversion": "1.0", "id": uuid::Uuid::now_v7().to_string(),
        "source": "/elsewhere", "type": "io.imagelib.rule.set.v1",
        "datacontenttype": "application/json",
        "data": {"registry_id": reg, "rule_id": "prod", "repositories": [{"glob": "acme/**"}],
            "kind": "auto", "enabled": true, "trust": {"mode": "lenient"}}});
    bus.publish_raw(
        &rule_subject,
        headers,
        bytes::Bytes::from(bad_rule.to_string()),
        "poison-rule",
    )
    .await
    .unwrap();

    // The events after them are applied: the gate refuses with the later verdict.
    env.rule(reg, "prod", "acme/**", Some(PolicyMode::Enforce))
        .await;
    let digest = env.tag(reg, "acme/llm", "1.0", ImageKind::Model, &[]).await;
    env.verdict(
        reg,
        "acme/llm",
        &digest,
        PolicyVerdict::Fail,
        "prod",
        &[(PolicyReason::SignatureInvalid, "payload digest differs")],
    )
    .await;
    let (s, p) = deploy_settled(&env, &svc, body(reg, "acme/llm", "1.0", "llm")).await;
    assert_eq!(s, 403, "{p}");
    assert_eq!(p["reasons"], json!(["signature_invalid"]));

    // Decodable but oversized: repeated reasons, too many findings, huge details with
    // control characters. Kept bounded, each reason once.
    let huge = format!("\u{1b}[31m{}", "x".repeat(5000));
    let many: Vec<(PolicyReason, &str)> = (0..40)
        .map(|_| (PolicyReason::Unsigned, huge.as_str()))
        .collect();
    env.verdict(reg, "acme/llm", &digest, PolicyVerdict::Fail, "prod", &many)
        .await;
    let (s, p) = deploy_settled(&env, &svc, body(reg, "acme/llm", "1.0", "llm")).await;
    assert_eq!(s, 403, "{p}");
    assert_eq!(p["reasons"], json!(["unsigned"]));
    let findings = p["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 32);
    let detail = findings[0]["detail"].as_str().unwrap();
    assert_eq!(detail.chars().count(), 1024);
    assert!(!detail.contains('\u{1b}'), "control characters dropped");
    let words = p["detail"].as_str().unwrap();
    assert!(
        words.chars().count() < 1200 && words.contains("and 29 more"),
        "{words}"
    );

    let image_dead = env.dead_letters("serving-deployer-image").await;
    assert_eq!(
        image_dead.len(),
        2,
        "both poison verdicts are dead-lettered"
    );
    assert_eq!(&image_dead[1].1[..], b"{\"verdict\": \"fail\"");
    let rule_dead = env.dead_letters("serving-deployer-rule").await;
    assert_eq!(rule_dead.len(), 1);
    assert_eq!(
        rule_dead[0].0.get("Imagelib-Dlq-Subject").unwrap().as_str(),
        rule_subject
    );
}
