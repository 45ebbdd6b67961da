//! `imagelib lifecycle policy` / `lifecycle preview` against a real `imagelib serve`
//! (in-process, port 0), NATS, PostgreSQL and a docker-registry with basic auth: a retention
//! policy set on a rule, a scan, the preview as a table, JSON and a script — and the script,
//! run by `sh` with `REGISTRY_AUTH`, deletes exactly what the preview said would go (and
//! imagelib itself deletes nothing).

use std::io::Write;
use std::process::{Command, Stdio};

use base64::Engine;
use imagelib::serve::Configs;
use imagelib_platform::config::CommonConfig;
use imagelib_testkit::registry::{ImageSpec, TestRegistry};
use imagelib_testkit::{TestDb, TestStream};
use serde_json::{Value, json};

const ADMIN: &str = "cli-lifecycle-admin-token";
const PASSWORD: &str = "lifecycle-canary-pw";

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

/// Runs the CLI with `stdin`; returns stdout and stderr, asserting success or failure.
fn imagelib(server: &Server, args: &[&str], stdin: &str, expect_failure: bool) -> (String, String) {
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
    if let Some(mut s) = child.stdin.take() {
        s.write_all(stdin.as_bytes()).unwrap();
    }
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

/// Runs `script` with `sh`, with only PATH and the given environment.
fn sh(script: &std::path::Path, env: &[(&str, &str)]) -> std::process::Output {
    let mut cmd = Command::new("sh");
    cmd.arg(script)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

fn image(content: &str, created: &str) -> ImageSpec {
    ImageSpec::linux_amd64()
        .layer(content.as_bytes())
        .created(created)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_policy_is_set_previewed_and_its_script_deletes_exactly_what_goes() {
    let (stream, db) = (TestStream::new(), TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&stream, &db, dir.path()).await;
    let registry = TestRegistry::builder()
        .htpasswd("robot", PASSWORD)
        .start()
        .await
        .unwrap();
    // apps/web: 1.0 = stable, 1.1, 2.0, 2.1 = latest = candidate; apps/api: 0.1, 0.2.
    let web = "apps/web";
    for (tag, created) in [
        ("1.0", "2024-01-01T00:00:00Z"),
        ("1.1", "2024-06-01T00:00:00Z"),
        ("2.0", "2025-01-01T00:00:00Z"),
        ("2.1", "2025-06-01T00:00:00Z"),
    ] {
        registry
            .push_image(web, tag, &image(&format!("web {tag}"), created))
            .await
            .unwrap();
    }
    registry.tag(web, "1.0", "stable").await.unwrap();
    registry.tag(web, "2.1", "latest").await.unwrap();
    registry.tag(web, "2.1", "candidate").await.unwrap();
    for (tag, created) in [
        ("0.1", "2024-02-01T00:00:00Z"),
        ("0.2", "2024-03-01T00:00:00Z"),
    ] {
        registry
            .push_image("apps/api", tag, &image(&format!("api {tag}"), created))
            .await
            .unwrap();
    }

    let run = |args: &[&str], stdin: &str, fail: bool| {
        tokio::task::block_in_place(|| imagelib(&server, args, stdin, fail))
    };
    let json =
        |out: &str| -> Value { serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}")) };
    let (out, _) = run(
        &[
            "--json",
            "registry",
            "add",
            "--label",
            "lifecycle",
            "--url",
            &registry.host(),
            "--insecure",
            "--username",
            "robot",
            "--password-stdin",
        ],
        PASSWORD,
        false,
    );
    let id = json(&out)["id"].as_str().unwrap().to_owned();
    run(
        &["rules", "set", &id, "apps", "--repositories", "apps/*"],
        "",
        false,
    );

    // No policy yet: shown as such, and a preview is a 409 problem (exit 4).
    let (out, _) = run(
        &["lifecycle", "policy", "--registry", &id, "--rule", "apps"],
        "",
        false,
    );
    assert_eq!(out.trim(), "no retention policy", "{out}");
    let (_, err) = run(
        &["lifecycle", "preview", "--registry", &id, "--rule", "apps"],
        "",
        true,
    );
    assert!(err.contains("has no retention policy"), "{err}");

    // A bad policy is refused by the server, naming the field.
    let file = dir.path().join("retention.yaml");
    std::fs::write(&file, "rules:\n  - template: latest_pushed\n    count: 0\n").unwrap();
    let (_, err) = run(
        &[
            "lifecycle",
            "policy",
            "--registry",
            &id,
            "--rule",
            "apps",
            "--file",
            file.to_str().unwrap(),
        ],
        "",
        true,
    );
    assert!(
        err.contains("422") && err.contains("/retention/rules/0/count"),
        "{err}"
    );
    // Keep the newest push per major version, and always `latest`.
    std::fs::write(
        &file,
        "rules:\n  - {template: latest_pushed, count: 1, per: major}\n  - template: always\n    tags: {include: [{exact: latest}]}\n",
    )
    .unwrap();
    let (out, _) = run(
        &[
            "lifecycle",
            "policy",
            "--registry",
            &id,
            "--rule",
            "apps",
            "--file",
            file.to_str().unwrap(),
        ],
        "",
        false,
    );
    assert!(
        out.contains("rule 0  latest_pushed 1 per major version"),
        "{out}"
    );
    assert!(out.contains("rule 1  always, tags exact:latest"), "{out}");
    assert!(
        out.contains("always kept: deployed, approved, HM tags approved-production"),
        "{out}"
    );
    // Changing the rule's discovery from flags keeps its retention policy.
    let (out, _) = run(
        &[
            "--json",
            "rules",
            "set",
            &id,
            "apps",
            "--repositories",
            "apps/*",
            "--description",
            "applications",
        ],
        "",
        false,
    );
    assert_eq!(json(&out)["retention"]["rules"][0]["per"], "major", "{out}");

    let (out, _) = run(&["registry", "sync", &id, "--wait"], "", false);
    assert!(out.contains("9 tags seen"), "{out}");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (out, _) = run(&["--json", "stats"], "", false);
        if json(&out)["tags"] == 9 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the catalog never got 9 tags: {out}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // By push time (the images' creation): web major 1 keeps 1.1, major 2 keeps 2.1, the
    // tags without a version keep latest (newest, and `always`); api keeps 0.2.
    let preview_args = ["lifecycle", "preview", "--registry", &id, "--rule", "apps"];
    let (out, _) = run(&[&["--json"][..], &preview_args[..]].concat(), "", false);
    let p = json(&out);
    let going: Vec<String> = p["going"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{}:{}",
                t["repository"].as_str().unwrap(),
                t["tag"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        going,
        [
            "apps/api:0.1",
            "apps/web:1.0",
            "apps/web:2.0",
            "apps/web:candidate",
            "apps/web:stable",
        ]
    );
    assert_eq!(p["summary"]["kept"], 4);
    assert_eq!(p["summary"]["digests_freed"], 3);
    assert_eq!(p["going"][1]["pushed_from"], "created");
    assert_eq!(p["going"][1]["digest_shared_with"], json!(["stable"]));
    assert_eq!(
        p["going"][3]["digest_kept_by"],
        json!(["2.1", "latest"]),
        "{}",
        p["going"][3]
    );

    let (out, _) = run(&preview_args, "", false);
    assert!(out.contains("WOULD GO"), "{out}");
    assert!(
        out.contains(
            "rule 0 (latest_pushed 1 per major version): 2nd most recently pushed of 2 of major \
             version 1 in apps/web, after the 1 it keeps"
        ),
        "{out}"
    );
    assert!(out.contains("5 of 9 tags would go"), "{out}");
    assert!(
        out.contains("note: apps/web:candidate shares its digest with 2.1, latest"),
        "{out}"
    );
    let (out, _) = run(&[&preview_args[..], &["--kept"]].concat(), "", false);
    assert!(out.contains("KEPT"), "{out}");
    assert!(out.contains("rule 1 (always): always kept"), "{out}");

    // The script: no credential in it, refuses to run without REGISTRY_AUTH, and deletes
    // exactly what goes (1.0 and stable with one call, 2.0, api 0.1; candidate is left out).
    let (script, _) = run(&[&preview_args[..], &["--script"]].concat(), "", false);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("robot:{PASSWORD}"));
    assert!(
        !script.contains(PASSWORD) && !script.contains(&basic),
        "{script}"
    );
    assert_eq!(
        script.lines().filter(|l| l.starts_with("curl ")).count(),
        3,
        "{script}"
    );
    let path = dir.path().join("delete.sh");
    std::fs::write(&path, &script).unwrap();
    // imagelib deleted nothing by previewing.
    for tag in ["1.0", "stable", "2.0", "candidate"] {
        assert!(
            registry.try_get_manifest(web, tag).await.unwrap().is_some(),
            "{tag}"
        );
    }
    let refused = sh(&path, &[]);
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("REGISTRY_AUTH"),
        "{refused:?}"
    );
    assert!(
        registry
            .try_get_manifest(web, "1.0")
            .await
            .unwrap()
            .is_some()
    );

    let auth = format!("Basic {basic}");
    let ran = sh(&path, &[("REGISTRY_AUTH", &auth)]);
    assert!(
        ran.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    for (repository, tag, present) in [
        (web, "1.0", false),
        (web, "stable", false),
        (web, "2.0", false),
        (web, "1.1", true),
        (web, "2.1", true),
        (web, "latest", true),
        (web, "candidate", true),
        ("apps/api", "0.1", false),
        ("apps/api", "0.2", true),
    ] {
        assert_eq!(
            registry
                .try_get_manifest(repository, tag)
                .await
                .unwrap()
                .is_some(),
            present,
            "{repository}:{tag}"
        );
    }

    // A rescan sees what the script did: the preview has nothing left to delete but the
    // tag that shares a kept digest.
    run(&["registry", "sync", &id, "--wait"], "", false);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (out, _) = run(&[&["--json"][..], &preview_args[..]].concat(), "", false);
        let p = json(&out);
        if p["summary"]["tags"] == 5 {
            assert_eq!(p["summary"]["going"], 1, "{p}");
            assert_eq!(p["going"][0]["tag"], "candidate", "{p}");
            assert_eq!(p["summary"]["bytes_freed"], 0, "{p}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{p}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    let (out, _) = run(
        &[
            "--json",
            "lifecycle",
            "policy",
            "--registry",
            &id,
            "--rule",
            "apps",
            "--remove",
        ],
        "",
        false,
    );
    assert!(json(&out).get("retention").is_none(), "{out}");
}
