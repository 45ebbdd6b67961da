//! Trust policies on repository rules: accepted, carried by `rule.set`, shown with key ids,
//! refused with the pointer of the bad field.

mod common;

use base64::Engine as _;
use common::{ADMIN, Env};
use imagelib_events::EventPayload;
use imagelib_events::model::{PolicyMode, SeverityLimit, TrustedIdentity};
use imagelib_testkit::registry::TestRegistry;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Digest as _;

const P256: &str = include_str!("../../../crates/rules/testdata/p256.pub");
const ED25519: &str = include_str!("../../../crates/rules/testdata/ed25519.pub");
const RSA1024: &str = include_str!("../../../crates/rules/testdata/rsa1024.pub");

/// `sha256:` + hex of the key's DER, computed here rather than by the code under test.
fn key_id(pem: &str) -> String {
    let b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .unwrap();
    let digest = sha2::Sha256::digest(&der);
    format!(
        "sha256:{}",
        digest
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    )
}

fn policy() -> Value {
    json!({
        "mode": "enforce",
        "keys": [{"name": "release", "pem": P256}, ED25519],
        "identities": [
            {"issuer": "https://token.actions.githubusercontent.com", "subject": "^https://github\\.com/acme/.*$"},
            {"x509_subject": "^CN=release,O=Acme$"},
        ],
        "max_severity": "high",
        "allow_cves": ["CVE-2024-1234 until 2027-01-31", {"id": "GHSA-abcd-efgh-ijkl", "expires": "2026-12-31", "reason": "not reachable"}],
        "require_sbom": true,
    })
}

#[tokio::test]
async fn a_rule_with_a_trust_policy_is_stored_emitted_and_shown_with_key_ids() {
    let env = Env::new();
    let svc = env.start().await;
    let registry = TestRegistry::start().await.unwrap();
    let r = svc.register_open(&registry, "trust").await;
    let id = r["id"].as_str().unwrap();
    let path = format!("/v1/registries/{id}/rules/signed");
    let (s, saved, _) = svc
        .call(
            Method::PUT,
            &path,
            Some(ADMIN),
            Some(json!({"repositories": "nvidia/nim/*", "trust": policy()})),
        )
        .await;
    assert_eq!(s, 200, "{saved}");

    let expected_keys = json!([
        {"name": "release", "pem": P256, "key_id": key_id(P256), "algorithm": "ecdsa-p256-sha256"},
        {"pem": ED25519, "key_id": key_id(ED25519), "algorithm": "ed25519"},
    ]);
    assert_eq!(saved["trust"]["keys"], expected_keys, "{saved}");
    assert_eq!(saved["trust"]["mode"], "enforce");
    assert_eq!(
        saved["trust"]["allow_cves"],
        json!([
            {"id": "CVE-2024-1234", "expires": "2027-01-31"},
            {"id": "GHSA-abcd-efgh-ijkl", "expires": "2026-12-31", "reason": "not reachable"},
        ])
    );
    let (s, got) = svc.get(&path).await;
    assert_eq!(s, 200);
    assert_eq!(got, saved);
    let (_, list) = svc.get(&format!("/v1/registries/{id}/rules")).await;
    assert_eq!(list["items"][0]["trust"]["keys"], expected_keys, "{list}");

    // The event carries the policy as the contract has it (no derived fields).
    let rule = env
        .events()
        .await
        .into_iter()
        .find_map(|e| match e.payload {
            EventPayload::RuleSet(r) => Some(r),
            _ => None,
        })
        .expect("a rule.set event");
    let trust = rule.trust.expect("the policy in rule.set");
    assert_eq!(trust.mode, PolicyMode::Enforce);
    assert_eq!(trust.keys.len(), 2);
    assert_eq!(trust.keys[0].name, "release");
    assert_eq!(trust.keys[0].pem, P256);
    assert_eq!(
        trust.identities[1],
        TrustedIdentity::X509 {
            x509_subject: "^CN=release,O=Acme$".into()
        }
    );
    assert_eq!(trust.max_severity, Some(SeverityLimit::High));
    assert_eq!(trust.allow_cves[0].id, "CVE-2024-1234");
    assert!(trust.require_sbom);

    // What GET shows goes back through PUT as it is; switching the policy off is a change.
    let mut body = got.clone();
    body["trust"]["mode"] = json!("off");
    let (s, again, _) = svc.call(Method::PUT, &path, Some(ADMIN), Some(body)).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["trust"]["mode"], "off");
    assert_eq!(again["trust"]["keys"], expected_keys);
    let sets: Vec<_> = env
        .events()
        .await
        .into_iter()
        .filter_map(|e| match e.payload {
            EventPayload::RuleSet(r) => r.trust,
            _ => None,
        })
        .collect();
    assert_eq!(sets.len(), 2);
    assert_eq!(sets[1].mode, PolicyMode::Off);

    // Dropping `trust` removes the policy.
    let (s, plain, _) = svc
        .call(
            Method::PUT,
            &path,
            Some(ADMIN),
            Some(json!({"repositories": "nvidia/nim/*"})),
        )
        .await;
    assert_eq!(s, 200);
    assert!(plain.get("trust").is_none(), "{plain}");

    // The OpenAPI document describes the policy.
    let (s, api) = svc.get("/openapi.json").await;
    assert_eq!(s, 200);
    let schemas = &api["components"]["schemas"];
    for field in [
        "mode",
        "keys",
        "identities",
        "max_severity",
        "allow_cves",
        "require_sbom",
    ] {
        assert!(
            schemas["TrustPolicyDoc"]["properties"][field].is_object(),
            "{field}"
        );
    }
    assert!(schemas["TrustedKeyDoc"]["properties"]["key_id"].is_object());
    assert_eq!(
        api["paths"]["/v1/registries/{id}/rules/{rule_id}"]["put"]["requestBody"]["content"]["application/json"]
            ["schema"]["$ref"],
        "#/components/schemas/RuleInputDoc"
    );
}

#[tokio::test]
async fn bad_policies_are_refused_with_the_pointer_and_nothing_is_emitted() {
    let env = Env::new();
    let svc = env.start().await;
    let registry = TestRegistry::start().await.unwrap();
    let r = svc.register_open(&registry, "trust-bad").await;
    let id = r["id"].as_str().unwrap();
    let path = format!("/v1/registries/{id}/rules/signed");
    let before = env.event_types().await.len();
    let cases = [
        (
            json!({"keys": ["-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----\n"]}),
            "/trust/keys/0",
            "invalid public key",
        ),
        (
            json!({"keys": [P256, RSA1024]}),
            "/trust/keys/1",
            "2048-bit minimum",
        ),
        (
            json!({"keys": [{"pem": P256, "key_id": key_id(ED25519)}]}),
            "/trust/keys/0/key_id",
            "is not the id of this key",
        ),
        (
            json!({"identities": [{"issuer": "http://issuer.example", "subject": "^a$"}]}),
            "/trust/identities/0/issuer",
            "https",
        ),
        (
            json!({"identities": [{"issuer": "https://issuer.example", "subject": "ci@acme\\.com"}]}),
            "/trust/identities/0/subject",
            "anchor the regex",
        ),
        (
            json!({"max_severity": "high", "allow_cves": ["CVE-2024-1234 until 2027-01-31", "CVE-2024-1234 until 2028-01-31"]}),
            "/trust/allow_cves/1/id",
            "listed twice",
        ),
        (
            json!({"max_severity": "high", "allow_cves": [{"id": "CVE-2024-1234", "expires": "2027-02-30"}]}),
            "/trust/allow_cves/0/expires",
            "not a date",
        ),
        (
            json!({"mode": "enforce"}),
            "/trust",
            "must ask for something",
        ),
        (
            json!({"require_sbom": true, "requre": 1}),
            "/trust/requre",
            "unknown field",
        ),
        (json!({"keys": vec![P256; 33]}), "/trust/keys", "at most 32"),
    ];
    for (trust, pointer, needle) in cases {
        let (s, p, _) = svc
            .call(
                Method::PUT,
                &path,
                Some(ADMIN),
                Some(json!({"repositories": "a", "trust": trust})),
            )
            .await;
        assert_eq!(s, 422, "{trust}: {p}");
        assert_eq!(p["errors"][0]["pointer"], pointer, "{trust}: {p}");
        assert!(
            p["detail"].as_str().unwrap_or("").contains(needle),
            "{trust}: {p}"
        );
    }
    // A body naming another rule (a GET of another rule pasted here) is refused.
    let (s, p, _) = svc
        .call(
            Method::PUT,
            &path,
            Some(ADMIN),
            Some(json!({"rule_id": "other", "repositories": "a", "trust": {"require_sbom": true}})),
        )
        .await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(p["errors"][0]["pointer"], "/rule_id", "{p}");
    let (s, _) = svc.get(&path).await;
    assert_eq!(s, 404);
    assert_eq!(env.event_types().await.len(), before);

    // The agent YAML import validates policies the same way, pointing into the file.
    let yaml = "dispatcher: {capabilities: {provisioning: {images: {discovery: {registry: {postgres_repositories: [{name: postgresql, trust: {mode: enforce}}]}}}}}}";
    let res = svc
        .http
        .post(svc.url(&format!("/v1/registries/{id}/rules/import")))
        .bearer_auth(ADMIN)
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 422);
    let p: Value = res.json().await.unwrap();
    assert_eq!(
        p["errors"][0]["pointer"],
        "/dispatcher/capabilities/provisioning/images/discovery/registry/postgres_repositories/0/trust",
        "{p}"
    );
    assert_eq!(env.event_types().await.len(), before);
}

#[tokio::test]
async fn agent_yaml_rules_carry_their_policies() {
    let env = Env::new();
    let svc = env.start().await;
    let registry = TestRegistry::start().await.unwrap();
    let r = svc.register_open(&registry, "trust-yaml").await;
    let id = r["id"].as_str().unwrap();
    let pem: String = P256.lines().map(|l| format!("{:22}{l}\n", "")).collect();
    let yaml = format!(
        "dispatcher:
  capabilities:
    provisioning:
      images:
        discovery:
          registry:
            model_repositories:
              - name: nvidia/nim/*
                trust:
                  mode: audit
                  keys:
                    - |
{pem}                  max_severity: critical
                  require_sbom: true
"
    );
    let res = svc
        .http
        .post(svc.url(&format!("/v1/registries/{id}/rules/import")))
        .bearer_auth(ADMIN)
        .header("content-type", "application/yaml")
        .body(yaml)
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    let item = &body["items"][0];
    assert_eq!(item["rule_id"], "model-nvidia-nim-x");
    assert_eq!(item["trust"]["mode"], "audit");
    assert_eq!(item["trust"]["keys"][0]["key_id"], key_id(P256));
    assert_eq!(item["trust"]["max_severity"], "critical");
    let rule = env
        .events()
        .await
        .into_iter()
        .find_map(|e| match e.payload {
            EventPayload::RuleSet(r) => Some(r),
            _ => None,
        })
        .unwrap();
    let trust = rule.trust.expect("the imported policy");
    assert_eq!(trust.keys[0].pem, P256);
    assert!(trust.require_sbom);
}
