//! A Harbor scan against the fake Harbor (imagelib-testkit) in front of a real registry:
//! `_catalog` is refused to the robot account, so its projects' repositories come from
//! Harbor's API; a project-scoped registration asks for nothing of another project;
//! Harbor's completed scans become `vulnerabilities_reported` once and are judged by the
//! trust policy; the robot's credentials go to Harbor only.

use imagelib_events::EventPayload;
use imagelib_events::event::ReportOrigin;
use imagelib_events::model::{
    PolicyMode, PolicyReason, PolicyVerdict, RegistryType, RuleKind, SeverityLimit, TrustPolicy,
};
use imagelib_testkit::harbor::{FakeHarbor, overview};
use imagelib_testkit::proxy::{FaultProxy, Response};
use imagelib_testkit::registry::{ImageSpec, TestRegistry};

use crate::common::Env;

const ROBOT: &str = "robot$ai+scanner";
const SECRET: &str = "harborRobotS3cret";

fn image(n: &str) -> ImageSpec {
    ImageSpec::linux_amd64().layer(n.as_bytes())
}

fn robot() -> Option<serde_json::Value> {
    Some(serde_json::json!({"kind": "basic", "username": ROBOT, "password": SECRET}))
}

fn reports(
    events: &[imagelib_events::Envelope],
) -> Vec<&imagelib_events::event::VulnerabilitiesReported> {
    events
        .iter()
        .filter_map(|e| match &e.payload {
            EventPayload::VulnerabilitiesReported(v) => Some(v),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_robot_scans_its_projects_without_the_catalog_and_harbors_scans_are_reports()
-> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let app = registry.push_image("ai/app", "1.0", &image("app")).await?;
    registry
        .push_image("ai/models/llama", "2.0", &image("llama"))
        .await?;
    registry
        .push_image("web/site", "1.0", &image("site"))
        .await?;
    let harbor = FakeHarbor::start(&registry).await;
    harbor.project("ai", false, &["app", "models/llama"]);
    harbor.project("web", false, &["site"]);
    harbor.robot(ROBOT, SECRET, &["ai"]);
    harbor.artifact(
        "ai/app",
        &app.digest,
        &["1.0"],
        Some(overview(
            "Success",
            &[("Critical", 1), ("High", 2), ("Medium", 0)],
            1,
        )),
    );
    let env = Env::new().await;
    let scanner = env.start().await;
    let id = env
        .register_with(&harbor.host(), robot(), |r| {
            r.registry_type = RegistryType::Harbor
        })
        .await;
    env.rule(id, "all", &["**"], RuleKind::Auto).await;
    let (done, events) = env.scan_ok(id, None).await;
    assert!(!done.partial, "{done:?}");
    assert_eq!(done.added, 2, "{:?}", crate::common::summary(&events));
    assert_eq!(done.repositories, 2);

    let reported = reports(&events);
    assert_eq!(reported.len(), 1, "{:?}", crate::common::summary(&events));
    let r = reported[0];
    assert_eq!(r.digest.as_str(), app.digest);
    assert_eq!(r.repository.as_str(), "ai/app");
    assert_eq!(r.origin, Some(ReportOrigin::HarborScanOverview));
    assert_eq!(r.scanner.name, "Trivy");
    assert_eq!((r.counts.critical, r.counts.high), (1, 2));
    assert_eq!(r.fixable, 1);
    assert_eq!(r.scanned_at.to_rfc3339(), "2026-12-01T10:00:03+00:00");

    // The same overview on the next scan is not said again.
    let (_, again) = env.scan_ok(id, None).await;
    assert!(
        reports(&again).is_empty(),
        "{:?}",
        crate::common::summary(&again)
    );

    let seen = harbor.seen();
    let paths: Vec<&str> = seen.iter().map(|q| q.path()).collect();
    assert!(paths.contains(&"/v2/_catalog"), "the catalog was tried");
    assert!(paths.contains(&"/api/v2.0/projects"), "{paths:?}");
    assert!(
        paths.contains(&"/api/v2.0/projects/ai/repositories/app/artifacts"),
        "{paths:?}"
    );
    assert!(
        !paths
            .iter()
            .any(|p| p.starts_with("/v2/web/") || p.contains("/projects/web")),
        "nothing of another project: {paths:?}"
    );
    scanner.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_project_scoped_registration_scans_only_its_project() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    registry.push_image("ai/app", "1.0", &image("app")).await?;
    registry
        .push_image("web/site", "1.0", &image("site"))
        .await?;
    let harbor = FakeHarbor::start(&registry).await;
    harbor.project("ai", false, &["app"]);
    harbor.project("web", false, &["site"]);
    // The robot may see both; the registration names one.
    harbor.robot(ROBOT, SECRET, &["ai", "web"]);
    // A scan still `Running` in Harbor is no report.
    let running = registry
        .push_image("ai/app", "1.1", &image("app 1.1"))
        .await?;
    harbor.artifact(
        "ai/app",
        &running.digest,
        &["1.1"],
        Some(overview("Running", &[], 0)),
    );
    let env = Env::new().await;
    let scanner = env.start().await;
    let id = env
        .register_with(&format!("{}/ai", harbor.host()), robot(), |r| {
            r.registry_type = RegistryType::Harbor
        })
        .await;
    env.rule(id, "all", &["**"], RuleKind::Auto).await;
    let (done, events) = env.scan_ok(id, None).await;
    assert!(!done.partial, "{done:?}");
    assert_eq!(done.repositories, 1);
    assert_eq!(done.added, 2, "{:?}", crate::common::summary(&events));
    assert!(reports(&events).is_empty());
    let seen = harbor.seen();
    let paths: Vec<&str> = seen.iter().map(|q| q.path()).collect();
    assert!(!paths.contains(&"/v2/_catalog"), "{paths:?}");
    assert!(!paths.contains(&"/api/v2.0/projects"), "{paths:?}");
    assert!(
        paths.contains(&"/api/v2.0/projects/ai/repositories"),
        "{paths:?}"
    );
    assert!(
        !paths.iter().any(|p| p.contains("web")),
        "nothing of another project: {paths:?}"
    );
    scanner.stop().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_robots_credentials_never_follow_a_link_to_another_host() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    for r in ["ai/a", "ai/b", "ai/c"] {
        registry.push_image(r, "1.0", &image(r)).await?;
    }
    let harbor = FakeHarbor::start(&registry).await;
    harbor.project("ai", false, &["a", "b", "c"]);
    harbor.robot(ROBOT, SECRET, &["ai"]);
    let elsewhere = FaultProxy::respond_always(Response::new(
        200,
        &[("Content-Type", "application/json")],
        r#"[{"name":"ai/evil"}]"#,
    ))
    .await;
    harbor.next_on(&format!("http://{}", elsewhere.host()));
    let env = Env::new().await;
    let mut config = env.config();
    config.scanner.page_size = 2;
    let scanner = env.start_with(config).await;
    let id = env
        .register_with(&format!("{}/ai", harbor.host()), robot(), |r| {
            r.registry_type = RegistryType::Harbor
        })
        .await;
    env.rule(id, "all", &["**"], RuleKind::Auto).await;
    let (done, events) = env.scan_ok(id, None).await;
    assert!(done.partial, "the listing was cut: {done:?}");
    assert_eq!(done.added, 2, "{:?}", crate::common::summary(&events));
    assert!(
        elsewhere.seen().is_empty(),
        "nothing went to the other host"
    );
    scanner.stop().await;
    Ok(())
}

/// The last `policy_evaluated` of each digest among `events`.
fn verdicts(
    events: &[imagelib_events::Envelope],
) -> std::collections::HashMap<String, (PolicyVerdict, Vec<PolicyReason>)> {
    let mut out = std::collections::HashMap::new();
    for e in events {
        if let EventPayload::PolicyEvaluated(p) = &e.payload {
            out.insert(p.digest.to_string(), (p.verdict, p.reasons.clone()));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn harbors_scans_are_judged_by_the_trust_policy_and_a_rescan_counts() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    let critical = registry.push_image("ai/app", "1.0", &image("1.0")).await?;
    let low = registry.push_image("ai/app", "2.0", &image("2.0")).await?;
    let unscanned = registry.push_image("ai/app", "3.0", &image("3.0")).await?;
    let harbor = FakeHarbor::start(&registry).await;
    harbor.project("ai", false, &["app"]);
    harbor.robot(ROBOT, SECRET, &["ai"]);
    harbor.artifact(
        "ai/app",
        &critical.digest,
        &["1.0"],
        Some(overview("Success", &[("Critical", 1), ("Low", 3)], 1)),
    );
    harbor.artifact(
        "ai/app",
        &low.digest,
        &["2.0"],
        Some(overview("Success", &[("Low", 2)], 0)),
    );
    let env = Env::new().await;
    let scanner = env.start().await;
    let id = env
        .register_with(&format!("{}/ai", harbor.host()), robot(), |r| {
            r.registry_type = RegistryType::Harbor
        })
        .await;
    env.rule_with(id, "app", &["ai/app"], RuleKind::Auto, |r| {
        r.trust = Some(TrustPolicy {
            mode: PolicyMode::Enforce,
            keys: vec![],
            identities: vec![],
            max_severity: Some(SeverityLimit::High),
            allow_cves: vec![],
            require_sbom: false,
        });
    })
    .await;
    let (done, events) = env.scan_ok(id, None).await;
    assert_eq!(done.added, 3, "{:?}", crate::common::summary(&events));
    assert_eq!(reports(&events).len(), 2);
    let v = verdicts(&events);
    assert_eq!(
        v[&critical.digest],
        (PolicyVerdict::Fail, vec![PolicyReason::SeverityAboveLimit])
    );
    assert_eq!(v[&low.digest], (PolicyVerdict::Pass, vec![]));
    assert_eq!(
        v[&unscanned.digest],
        (
            PolicyVerdict::Fail,
            vec![PolicyReason::NoVulnerabilityReport]
        )
    );

    // Harbor scans 1.0 again and finds it fixed: a new report, and the verdict follows.
    harbor.artifact(
        "ai/app",
        &critical.digest,
        &["1.0"],
        Some(overview("Success", &[("Low", 1)], 0)),
    );
    let (_, events) = env.scan_ok(id, None).await;
    let reported = reports(&events);
    assert_eq!(reported.len(), 1, "{:?}", crate::common::summary(&events));
    assert_eq!(reported[0].digest.as_str(), critical.digest);
    let v = verdicts(&events);
    assert_eq!(v[&critical.digest], (PolicyVerdict::Pass, vec![]));
    scanner.stop().await;
    Ok(())
}
