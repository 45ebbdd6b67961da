//! `imagelib deploy` against the deploy gate of a real serving-deployer (in-process, port 0,
//! real NATS and PostgreSQL): a refusal prints each reason and exits non-zero, and
//! `deploy show` lists the violations recorded on a running deployment.

use std::process::Command;
use std::time::Duration;

use imagelib_events::bus::{EventBus, StreamSettings};
use imagelib_events::event::{PolicyEvaluated, RegistryRegistered, RuleSet, TagDiscovered};
use imagelib_events::model::*;
use imagelib_events::{Digest, Envelope, EventPayload, RegistryId};
use imagelib_platform::config::CommonConfig;
use imagelib_testkit::{TestDb, TestStream};

const ADMIN: &str = "cli-gate-admin-token";

struct Server {
    url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// serving-deployer alone: the gate must see only the verdicts this test publishes, not
/// those a scanner in `imagelib serve` would evaluate from the same events.
async fn serve(stream: &TestStream, db: &TestDb, dir: &std::path::Path) -> Server {
    let common = CommonConfig {
        nats_url: stream.nats_url.clone(),
        database_url: db.url.clone(),
        stream: stream.name.clone(),
        subject_prefix: stream.prefix.clone(),
        http_addr: Some(([127, 0, 0, 1], 0).into()),
        master_key_file: dir.join("master.key"),
        gitops_dir: dir.join("gitops"),
        admin_token: Some(ADMIN.into()),
        ..Default::default()
    };
    let app = serving_deployer::startup::Application::build(serving_deployer::config::Config {
        common,
        ..Default::default()
    })
    .await
    .unwrap();
    let url = format!("http://{}", app.local_addr());
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    Server { url, _stop: tx }
}

/// The CLI's exit code, stdout and stderr.
fn imagelib(server: &Server, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_imagelib"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("IMAGELIB_URL", &server.url)
        .env("IMAGELIB_TOKEN", ADMIN)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn publish(bus: &EventBus, payload: impl Into<EventPayload>) {
    bus.publish(&Envelope::new("test", payload)).await.unwrap();
}

async fn tag(bus: &EventBus, registry: RegistryId, repo: &str, n: u8) -> Digest {
    let digest: Digest = format!("sha256:{}", format!("{n:02x}").repeat(32))
        .parse()
        .unwrap();
    publish(
        bus,
        TagDiscovered {
            registry_id: registry,
            repository: repo.parse().unwrap(),
            tag: "1.0".parse().unwrap(),
            digest: digest.clone(),
            details: ImageDetails {
                media_type: "application/vnd.oci.image.manifest.v1+json".into(),
                artifact_type: None,
                platforms: vec![],
                size: 1000,
                created: None,
                labels: Default::default(),
                annotations: Default::default(),
                kind: ImageKind::Model,
                model_type: Some(ModelType::TextCompletion),
                extensions: vec![],
                referrers: vec![],
            },
        },
    )
    .await;
    digest
}

async fn verdict(
    bus: &EventBus,
    registry: RegistryId,
    repo: &str,
    digest: &Digest,
    verdict: PolicyVerdict,
    findings: &[(PolicyReason, &str)],
) {
    publish(
        bus,
        PolicyEvaluated {
            registry_id: registry,
            repository: repo.parse().unwrap(),
            digest: digest.clone(),
            verdict,
            reasons: findings.iter().map(|(r, _)| *r).collect(),
            policy: Some("prod".parse().unwrap()),
            findings: findings
                .iter()
                .map(|(reason, detail)| PolicyFinding {
                    reason: *reason,
                    detail: detail.to_string(),
                })
                .collect(),
        },
    )
    .await;
}

/// Run the CLI until `done` holds for its answer (the server's view is asynchronous).
async fn until(
    server: &Server,
    args: &[&str],
    done: impl Fn(i32, &str, &str) -> bool,
) -> (i32, String, String) {
    let mut last = (0, String::new(), String::new());
    for _ in 0..100 {
        last = tokio::task::block_in_place(|| imagelib(server, args));
        if done(last.0, &last.1, &last.2) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{args:?} never answered as expected: {last:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_refusal_prints_each_reason_and_show_lists_violations() {
    let (stream, db) = (TestStream::new(), TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&stream, &db, dir.path()).await;
    let bus = EventBus::from_client(
        stream.client().await.unwrap(),
        StreamSettings::new(&stream.name, &stream.prefix),
    );
    bus.ensure_stream().await.unwrap();

    let reg = RegistryId::new();
    publish(
        &bus,
        RegistryRegistered {
            registry_id: reg,
            label: "Acme".into(),
            url: "registry.acme.internal:5000".into(),
            registry_type: RegistryType::Generic,
            insecure: false,
            auth_kind: AuthKind::None,
            credential: None,
            visibility: vec![],
            ca_pem: None,
            scan_interval_secs: None,
            repositories: vec![],
            webhook_secret: None,
            auth_hosts: vec![],
            report_pulls: false,
            proxy_url: None,
            no_proxy: Vec::new(),
            artifact_registry: None,
        },
    )
    .await;
    publish(
        &bus,
        RuleSet {
            registry_id: reg,
            rule_id: "prod".parse().unwrap(),
            repositories: vec![RepositoryPattern::Glob("acme/**".into())],
            tags: Default::default(),
            kind: RuleKind::Auto,
            description: String::new(),
            hm_tags: vec![],
            enabled: true,
            trust: Some(TrustPolicy {
                mode: PolicyMode::Enforce,
                keys: vec![],
                identities: vec![],
                max_severity: Some(SeverityLimit::High),
                allow_cves: vec![],
                require_sbom: false,
            }),
            retention: None,
        },
    )
    .await;
    // A probe without a verdict: pending once the rule and its tag are in the view, so a
    // deploy below cannot slip through before the rule is seen.
    tag(&bus, reg, "acme/probe", 3).await;
    let probe = format!("{reg}/acme/probe:1.0");
    let (code, _, err) = until(
        &server,
        &["deploy", "create", &probe, "--name", "probe"],
        |_, _, e| e.contains("409"),
    )
    .await;
    assert_eq!(code, 5, "{err}");
    assert!(
        err.contains("[policy-pending]") && err.contains("hint: run `imagelib registry sync"),
        "{err}"
    );

    let bad = tag(&bus, reg, "acme/bad", 1).await;
    verdict(
        &bus,
        reg,
        "acme/bad",
        &bad,
        PolicyVerdict::Fail,
        &[
            (PolicyReason::Unsigned, "no signature referrer"),
            (
                PolicyReason::SeverityAboveLimit,
                "CVE-2024-1234 (critical) is above high",
            ),
        ],
    )
    .await;

    let image = format!("{reg}/acme/bad:1.0");
    let create = [
        "deploy",
        "create",
        &image,
        "--name",
        "bad",
        "--namespace",
        "models",
    ];
    let (code, _, err) = until(&server, &create, |_, _, e| e.contains("403")).await;
    assert_eq!(code, 4, "refused: {err}");
    assert!(err.contains("[policy-violation]"), "{err}");
    assert!(err.contains("  - unsigned: no signature referrer"), "{err}");
    assert!(
        err.contains("  - severity_above_limit: CVE-2024-1234 (critical) is above high"),
        "{err}"
    );
    assert!(
        err.contains("hint: the image fails its trust policy"),
        "{err}"
    );
    assert!(
        !err.contains("stronger role"),
        "not a permissions problem: {err}"
    );

    // A passing image deploys; a later failing verdict is shown on it.
    let ok = tag(&bus, reg, "acme/ok", 2).await;
    verdict(&bus, reg, "acme/ok", &ok, PolicyVerdict::Pass, &[]).await;
    let image = format!("{reg}/acme/ok:1.0");
    let create = [
        "deploy",
        "create",
        &image,
        "--name",
        "ok",
        "--namespace",
        "models",
        "-o",
        "json",
    ];
    let (_, out, _) = until(&server, &create, |c, _, _| c == 0).await;
    let d: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = d["id"].as_str().unwrap().to_owned();
    verdict(
        &bus,
        reg,
        "acme/ok",
        &ok,
        PolicyVerdict::Fail,
        &[(
            PolicyReason::NoVulnerabilityReport,
            "the report was removed",
        )],
    )
    .await;
    let (_, out, _) = until(&server, &["deploy", "show", &id], |_, o, _| {
        o.contains("policy violations:")
    })
    .await;
    assert!(out.contains("running"), "{out}");
    assert!(
        out.contains("- no_vulnerability_report: the report was removed"),
        "{out}"
    );
    assert!(out.contains("applied"), "left running: {out}");
    let (_, out, _) = tokio::task::block_in_place(|| imagelib(&server, &["deploy", "ls"]));
    let row = out
        .lines()
        .find(|l| l.contains("acme/ok"))
        .unwrap_or_default();
    assert!(row.contains("running: no_vulnerability_report"), "{out}");
}
