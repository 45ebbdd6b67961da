//! `imagelib rules trust` / `rules show` against a real `imagelib serve` (in-process, port 0),
//! NATS, PostgreSQL and docker-registry.

use std::io::Write;
use std::process::{Command, Stdio};

use imagelib::serve::Configs;
use imagelib_platform::config::CommonConfig;
use imagelib_testkit::registry::TestRegistry;
use imagelib_testkit::{TestDb, TestStream};
use serde_json::{Value, json};

const ADMIN: &str = "cli-trust-admin-token";
const P256: &str = include_str!("../../crates/rules/testdata/p256.pub");
const ED25519: &str = include_str!("../../crates/rules/testdata/ed25519.pub");

struct Server {
    url: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

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
        allow_networks: Some(imagelib_testkit::LOOPBACK_NETWORKS.into()),
        ..Default::default()
    };
    let app = imagelib::serve::build(Configs::from_common(common))
        .await
        .unwrap();
    let url = format!("http://{}", app.local_addr());
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    Server { url, _stop: tx }
}

/// Runs the CLI; returns stdout and stderr, asserting success or failure.
fn imagelib(server: &Server, args: &[&str], expect_failure: bool) -> (String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_imagelib"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("IMAGELIB_URL", &server.url)
        .env("IMAGELIB_TOKEN", ADMIN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdin.take().map(|mut s| s.write_all(b"")));
    let out = child.wait_with_output().unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert_eq!(
        !out.status.success(),
        expect_failure,
        "{args:?}\nstdout: {stdout}\nstderr: {stderr}"
    );
    (stdout, stderr)
}

#[tokio::test(flavor = "multi_thread")]
async fn trust_policies_are_set_shown_switched_off_and_removed_through_the_cli() {
    let (stream, db) = (TestStream::new(), TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&stream, &db, dir.path()).await;
    let registry = TestRegistry::start().await.unwrap();
    let run =
        |args: &[&str], fail: bool| tokio::task::block_in_place(|| imagelib(&server, args, fail));
    let (out, _) = run(
        &[
            "--json",
            "registry",
            "add",
            "--label",
            "trust",
            "--url",
            &format!("127.0.0.1:{}", registry.port()),
            "--insecure",
        ],
        false,
    );
    let id = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    run(
        &[
            "rules",
            "set",
            &id,
            "nim",
            "--repositories",
            "nvidia/nim/*",
            "--kind",
            "model",
        ],
        false,
    );
    let key = dir.path().join("cosign.pub");
    std::fs::write(&key, P256).unwrap();

    // No policy yet.
    let (out, _) = run(&["rules", "trust", &id, "nim"], false);
    assert_eq!(out.trim(), "none", "{out}");

    let (out, _) = run(
        &[
            "rules",
            "trust",
            &id,
            "nim",
            "--mode",
            "enforce",
            "--key",
            key.to_str().unwrap(),
            "--identity",
            "https://token.actions.githubusercontent.com=^https://github\\.com/acme/.*$",
            "--x509-subject",
            "^CN=release,O=Acme$",
            "--max-severity",
            "high",
            "--allow-cve",
            "CVE-2024-1234:2027-01-31",
            "--allow-cve",
            "GHSA-abcd-efgh-ijkl until 2026-12-31",
            "--require-sbom",
        ],
        false,
    );
    assert!(out.contains("mode          enforce"), "{out}");
    assert!(out.contains("key           cosign sha256:"), "{out}");
    assert!(out.contains("(ecdsa-p256-sha256)"), "{out}");
    assert!(
        out.contains("identity      https://token.actions.githubusercontent.com ^https://github\\.com/acme/.*$"),
        "{out}"
    );
    assert!(
        out.contains("identity      x509 subject ^CN=release,O=Acme$"),
        "{out}"
    );
    assert!(
        out.contains("allow         CVE-2024-1234 until 2027-01-31"),
        "{out}"
    );
    assert!(out.contains("require sbom  yes"), "{out}");

    let (out, _) = run(&["--json", "rules", "show", &id, "nim"], false);
    let rule: Value = serde_json::from_str(&out).unwrap();
    let trust = &rule["trust"];
    assert_eq!(trust["mode"], "enforce");
    assert_eq!(trust["keys"][0]["name"], "cosign");
    assert_eq!(trust["keys"][0]["pem"], P256);
    assert!(
        trust["keys"][0]["key_id"]
            .as_str()
            .unwrap()
            .starts_with("sha256:")
    );
    assert_eq!(trust["max_severity"], "high");
    assert_eq!(
        trust["allow_cves"],
        json!([{"id": "CVE-2024-1234", "expires": "2027-01-31"},
               {"id": "GHSA-abcd-efgh-ijkl", "expires": "2026-12-31"}])
    );
    // The rest of the rule is untouched by `rules trust`.
    assert_eq!(rule["kind"], "model");
    assert_eq!(rule["repositories"], json!([{"glob": "nvidia/nim/*"}]));

    let (out, _) = run(&["rules", "ls", &id], false);
    assert!(out.contains("TRUST"), "{out}");
    assert!(
        out.contains("enforce: 1 key, 2 identities, max high, 2 allowed CVEs, sbom"),
        "{out}"
    );
    let (out, _) = run(&["rules", "show", &id, "nim"], false);
    assert!(
        out.contains("trust policy") && out.contains("max severity  high"),
        "{out}"
    );

    // Changing the rule's discovery from flags keeps its policy.
    let (out, _) = run(
        &[
            "--json",
            "rules",
            "set",
            &id,
            "nim",
            "--repositories",
            "nvidia/nim/*",
            "--include",
            "^2\\.",
            "--kind",
            "model",
        ],
        false,
    );
    let rule: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        rule["tags"]["include"],
        json!([{"regex": "^2\\."}]),
        "{rule}"
    );
    assert_eq!(rule["trust"]["mode"], "enforce", "{rule}");
    assert_eq!(rule["trust"]["keys"][0]["pem"], P256);

    // A bad key is refused by the server, naming the field.
    let bad = dir.path().join("bad.pub");
    std::fs::write(
        &bad,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let (_, err) = run(
        &[
            "rules",
            "trust",
            &id,
            "nim",
            "--key",
            key.to_str().unwrap(),
            "--key",
            bad.to_str().unwrap(),
        ],
        true,
    );
    assert!(
        err.contains("422") && err.contains("/trust/keys/1"),
        "{err}"
    );
    let (_, err) = run(&["rules", "trust", &id, "nim", "--mode", "enforce"], true);
    assert!(err.contains("must ask for something"), "{err}");
    let (_, err) = run(
        &["rules", "trust", &id, "nim", "--identity", "no-equals-sign"],
        true,
    );
    assert!(err.contains("ISSUER=SUBJECT_REGEX"), "{err}");

    // --off keeps the policy but lifts the gate.
    let (out, _) = run(&["--json", "rules", "trust", &id, "nim", "--off"], false);
    let rule: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rule["trust"]["mode"], "off");
    assert_eq!(rule["trust"]["keys"][0]["pem"], P256);
    assert_eq!(rule["trust"]["require_sbom"], true);

    // A policy file (YAML) replaces it whole.
    let file = dir.path().join("policy.yaml");
    let pem: String = ED25519.lines().map(|l| format!("      {l}\n")).collect();
    std::fs::write(
        &file,
        format!("mode: audit\nkeys:\n  - name: ed\n    pem: |\n{pem}max_severity: critical\n"),
    )
    .unwrap();
    let (out, _) = run(
        &[
            "--json",
            "rules",
            "trust",
            &id,
            "nim",
            "--file",
            file.to_str().unwrap(),
        ],
        false,
    );
    let rule: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rule["trust"]["mode"], "audit");
    assert_eq!(rule["trust"]["keys"][0]["algorithm"], "ed25519");
    assert_eq!(rule["trust"]["keys"].as_array().unwrap().len(), 1);
    assert!(rule["trust"].get("identities").is_none(), "{rule}");

    let (out, _) = run(&["--json", "rules", "trust", &id, "nim", "--remove"], false);
    let rule: Value = serde_json::from_str(&out).unwrap();
    assert!(rule.get("trust").is_none(), "{rule}");
    let (_, err) = run(&["rules", "trust", &id, "nim", "--off"], true);
    assert!(err.contains("no trust policy"), "{err}");
}
