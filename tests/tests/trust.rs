//! Issue 13 end to end, through `imagelib serve` and a real registry behind the OCI 1.1
//! referrers API: a signed image with a clean report is verified in the catalog and
//! deploys; an unsigned one and a vulnerable one are refused with their reasons; moving the
//! policy to `audit` lets them deploy with the violation recorded, without a rescan.

use std::time::Duration;

use imagelib_e2e::TestServer;
use imagelib_testkit::publish::{Publisher, cosign_vuln_predicate, media, predicate, trivy_report};
use imagelib_testkit::referrers::ReferrersProxy;
use imagelib_testkit::registry::{ImageSpec, PushedManifest, TestRegistry};
use imagelib_testkit::signing::TestKey;
use serde_json::{Value, json};

/// The catalog's item for `repo:tag` once `pred` holds for it.
async fn catalog_item(server: &TestServer, repo: &str, pred: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    for _ in 0..600 {
        let (s, page) = server
            .call(
                reqwest::Method::GET,
                &format!("/v1/images?repository={repo}"),
                None,
            )
            .await;
        if s == 200
            && let Some(item) = page["items"].as_array().and_then(|a| a.first())
        {
            if pred(item) {
                return item.clone();
            }
            last = item.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{repo} never reached the expected state: {last}");
}

async fn push(registry: &TestRegistry, repo: &str) -> PushedManifest {
    registry
        .push_image(
            repo,
            "1.0",
            &ImageSpec::linux_amd64().label("io.imagelib.model.type", "text-completion"),
        )
        .await
        .unwrap()
}

fn verdict(item: &Value) -> Option<&str> {
    item["trust"]["policy"]["verdict"].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signed_images_deploy_and_unsigned_or_vulnerable_ones_are_refused_with_reasons() {
    let server = TestServer::start().await.unwrap();
    server.wait_ready().await.unwrap();
    let registry = TestRegistry::start().await.unwrap();
    let proxy = ReferrersProxy::start(([127, 0, 0, 1], registry.port()).into(), 10).await;
    let key = TestKey::generate();

    // A signed image with a report of one low finding and an SBOM; an unsigned image; a
    // signed image whose report holds a critical finding.
    let signed = push(&registry, "acme/signed").await;
    let p = Publisher::referrers(&registry, &proxy, "acme/signed");
    p.cosign_sign(&signed, &[&key]).await.unwrap();
    let report = trivy_report(
        "acme/signed:1.0",
        &signed.digest,
        &[("CVE-2026-0001", "LOW", Some("1.0.1"))],
    );
    p.cosign_attest(
        &signed,
        &key,
        predicate::COSIGN_VULN,
        cosign_vuln_predicate(report, "0.58.0", "2026-12-01T10:00:00Z"),
    )
    .await
    .unwrap();
    p.sbom(
        &signed,
        media::SPDX_JSON,
        &imagelib_testkit::publish::spdx_sbom("acme/signed", &[("openssl", "3.3.2")]),
    )
    .await
    .unwrap();
    push(&registry, "acme/unsigned").await;
    let vulnerable = push(&registry, "acme/vulnerable").await;
    let p = Publisher::referrers(&registry, &proxy, "acme/vulnerable");
    p.cosign_sign(&vulnerable, &[&key]).await.unwrap();
    p.trivy_report(
        &vulnerable,
        &trivy_report(
            "acme/vulnerable:1.0",
            &vulnerable.digest,
            &[("CVE-2026-0002", "CRITICAL", None)],
        ),
    )
    .await
    .unwrap();

    let (s, r) = server.call(reqwest::Method::POST,
        "/v1/registries",
        Some(json!({"label": "trust", "url": proxy.host(), "registry_type": "generic", "insecure": true})),
    )
    .await;
    assert_eq!(s, 201, "{r}");
    let id = r["id"].as_str().unwrap().to_owned();
    let (s, r) = server
        .call(
            reqwest::Method::PUT,
            &format!("/v1/registries/{id}/rules/acme"),
            Some(json!({"repositories": "acme/*", "kind": "model",
            "trust": {"mode": "enforce", "keys": [key.public_pem()], "max_severity": "high"}})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(server.sync(&id).await["state"], "completed");

    // The catalog shows who signed, what the reports say and the verdict.
    let item = catalog_item(&server, "acme/signed", |i| verdict(i).is_some()).await;
    assert_eq!(verdict(&item), Some("pass"), "{item}");
    assert_eq!(item["trust"]["signed"], true, "{item}");
    assert_eq!(item["trust"]["max_severity"], "low", "{item}");
    assert!(
        !item["trust"]["sbom"].as_array().unwrap().is_empty(),
        "{item}"
    );
    let item = catalog_item(&server, "acme/unsigned", |i| verdict(i).is_some()).await;
    assert_eq!(verdict(&item), Some("fail"), "{item}");
    assert_eq!(item["trust"]["signed"], false, "{item}");
    assert_eq!(
        item["trust"]["policy"]["reasons"],
        json!(["unsigned", "no_vulnerability_report"]),
        "{item}"
    );
    let item = catalog_item(&server, "acme/vulnerable", |i| verdict(i).is_some()).await;
    assert_eq!(verdict(&item), Some("fail"), "{item}");
    assert_eq!(
        item["trust"]["policy"]["reasons"],
        json!(["severity_above_limit"]),
        "{item}"
    );
    let (s, page) = server
        .call(reqwest::Method::GET, "/v1/images?policy=fail", None)
        .await;
    assert_eq!(s, 200, "{page}");
    let mut failing: Vec<&str> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["repository"].as_str())
        .collect();
    failing.sort_unstable();
    assert_eq!(failing, ["acme/unsigned", "acme/vulnerable"], "{page}");

    // The gate: the signed image deploys, the others are refused with their reasons.
    let deploy = |repo: &str, name: &str| json!({"image": format!("{id}/{repo}:1.0"), "name": name, "namespace": "models"});
    let (s, r) = wait_deployable(&server, deploy("acme/signed", "signed")).await;
    assert!(s == 201 || s == 202, "{s} {r}");
    let (s, r) = server
        .call(
            reqwest::Method::POST,
            "/v1/deployments",
            Some(deploy("acme/unsigned", "unsigned")),
        )
        .await;
    assert_eq!(s, 403, "{r}");
    assert_eq!(r["code"], "policy-violation", "{r}");
    assert_eq!(
        r["reasons"],
        json!(["unsigned", "no_vulnerability_report"]),
        "{r}"
    );
    let (s, r) = server
        .call(
            reqwest::Method::POST,
            "/v1/deployments",
            Some(deploy("acme/vulnerable", "vulnerable")),
        )
        .await;
    assert_eq!(s, 403, "{r}");
    assert_eq!(r["reasons"], json!(["severity_above_limit"]), "{r}");
    assert!(
        r["detail"].as_str().unwrap().contains("CVE-2026-0002"),
        "{r}"
    );

    // Audit mode: re-evaluated from what the scanner kept, no scan requested; the unsigned
    // image deploys and the deployment records why it should not have.
    let (s, r) = server
        .call(
            reqwest::Method::PUT,
            &format!("/v1/registries/{id}/rules/acme"),
            Some(json!({"repositories": "acme/*", "kind": "model",
            "trust": {"mode": "audit", "keys": [key.public_pem()], "max_severity": "high"}})),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    catalog_item(&server, "acme/unsigned", |i| verdict(i) == Some("audit")).await;
    let (s, r) = wait_deployable(&server, deploy("acme/unsigned", "unsigned")).await;
    assert!(s == 201 || s == 202, "{s} {r}");
    let dep = r["id"]
        .as_str()
        .or(r["deployment_id"].as_str())
        .unwrap()
        .to_owned();
    let mut shown = Value::Null;
    for _ in 0..200 {
        let (_, d) = server
            .call(
                reqwest::Method::GET,
                &format!("/v1/deployments/{dep}"),
                None,
            )
            .await;
        if d["policy_violations"]
            .as_array()
            .is_some_and(|v| !v.is_empty())
        {
            shown = d;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        shown["policy_violations"][0]["reasons"],
        json!(["unsigned", "no_vulnerability_report"]),
        "{shown}"
    );
    server.stop().await.unwrap();
}

/// Deploys once the deployer's view has the verdict (its projection is asynchronous):
/// retries while the answer is the `policy-pending` refusal.
async fn wait_deployable(server: &TestServer, body: Value) -> (u16, Value) {
    let mut last = (0, Value::Null);
    for _ in 0..200 {
        last = server
            .call(reqwest::Method::POST, "/v1/deployments", Some(body.clone()))
            .await;
        if last.0 != 409 && last.0 != 404 && last.1["code"] != "policy-violation" {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    last
}
