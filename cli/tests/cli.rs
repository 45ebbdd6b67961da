//! The `imagelib` CLI against a real `imagelib serve` (in-process, port 0), a real NATS,
//! PostgreSQL and docker-registry.

use std::io::Write;
use std::process::{Command, Stdio};

use imagelib::serve::Configs;
use imagelib_platform::config::CommonConfig;
use imagelib_testkit::registry::TestRegistry;
use imagelib_testkit::{TestDb, TestStream};

const ADMIN: &str = "cli-admin-token";

struct Server {
    url: String,
    common: CommonConfig,
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
        ..Default::default()
    };
    let app = imagelib::serve::build(Configs::from_common(common.clone()))
        .await
        .unwrap();
    let url = format!("http://{}", app.local_addr());
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    Server {
        url,
        common,
        _stop: tx,
    }
}

/// Run the CLI; stdin is fed, stdout returned; panics with stderr on failure unless
/// `expect_failure`.
fn imagelib(server: &Server, args: &[&str], stdin: &str, expect_failure: bool) -> (String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_imagelib"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("IMAGELIB_URL", &server.url)
        .env("IMAGELIB_TOKEN", ADMIN)
        .env("IMAGELIB_NATS_URL", &server.common.nats_url)
        .env("IMAGELIB_STREAM", &server.common.stream)
        .env("IMAGELIB_SUBJECT_PREFIX", &server.common.subject_prefix)
        .env("IMAGELIB_MASTER_KEY_FILE", &server.common.master_key_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
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
async fn registries_and_rules_through_the_cli() {
    let (stream, db) = (TestStream::new(), TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&stream, &db, dir.path()).await;
    let registry = TestRegistry::builder()
        .htpasswd("robot", "cli-canary-pw")
        .start()
        .await
        .unwrap();
    let url = format!("127.0.0.1:{}", registry.port());

    let s = server.url.clone();
    let _ = s;
    let run = |args: Vec<String>, stdin: String, fail: bool| {
        let server = &server;
        tokio::task::block_in_place(|| {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            imagelib(server, &a, &stdin, fail)
        })
    };
    let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();

    // A password on the command line is not even an option; a wrong one is refused with a reason.
    let (_, err) = run(
        v(&[
            "registry",
            "add",
            "--label",
            "cli",
            "--url",
            &url,
            "--insecure",
            "--username",
            "robot",
            "--password-stdin",
        ]),
        "wrong\n".into(),
        true,
    );
    assert!(err.contains("unauthorized"), "{err}");
    let (out, _) = run(
        v(&[
            "--json",
            "registry",
            "add",
            "--label",
            "cli",
            "--url",
            &url,
            "--insecure",
            "--username",
            "robot",
            "--password-stdin",
        ]),
        "cli-canary-pw\n".into(),
        false,
    );
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["status"], "validated");
    let id = r["id"].as_str().unwrap().to_owned();
    assert!(!out.contains("cli-canary-pw"));

    let (out, _) = run(v(&["registry", "ls"]), String::new(), false);
    assert!(out.starts_with("ID"), "{out}");
    assert!(out.contains("validated") && out.contains("cli"), "{out}");

    let (out, _) = run(
        v(&[
            "rules",
            "set",
            &id,
            "nim",
            "--repositories",
            "nvidia/nim/*",
            "--include",
            "^1\\.",
            "--kind",
            "model",
            "--hm-tag",
            "gpu",
        ]),
        String::new(),
        false,
    );
    assert!(out.contains("nim") && out.contains("model"), "{out}");
    let yaml = dir.path().join("agent.yaml");
    std::fs::write(
        &yaml,
        "dispatcher:\n  capabilities:\n    provisioning:\n      images:\n        discovery:\n          registry:\n            postgres_repositories:\n              - name: postgresql\n                description: Community PostgreSQL\n",
    )
    .unwrap();
    run(
        v(&["rules", "import", &id, yaml.to_str().unwrap()]),
        String::new(),
        false,
    );
    let (out, _) = run(v(&["--json", "rules", "ls", &id]), String::new(), false);
    let rules: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rules["items"].as_array().unwrap().len(), 2);
    let (_, err) = run(
        v(&["rules", "set", &id, "bad", "--repositories", "/(/"]),
        String::new(),
        true,
    );
    assert!(err.contains("422"), "{err}");

    let (out, _) = run(v(&["registry", "sync", &id]), String::new(), false);
    assert!(out.contains("sync requested"), "{out}");

    // Master-key rotation re-wraps the data key; the registry still validates.
    let (out, _) = run(v(&["keys", "rotate"]), String::new(), false);
    assert!(out.contains("1 data keys re-wrapped"), "{out}");

    run(v(&["registry", "rm", &id]), String::new(), false);
    let (_, err) = run(v(&["registry", "show", &id]), String::new(), true);
    assert!(err.contains("404") && err.contains("hint"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn deployments_and_completions_through_the_cli() {
    let (stream, db) = (TestStream::new(), TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&stream, &db, dir.path()).await;
    let run = |args: &[&str], fail: bool| {
        tokio::task::block_in_place(|| imagelib(&server, args, "", fail))
    };

    let (out, _) = run(&["completions", "bash"], false);
    assert!(
        out.contains("imagelib") && out.contains("registry"),
        "{}",
        &out[..200.min(out.len())]
    );

    let (out, _) = run(&["deploy", "ls"], false);
    assert!(out.starts_with("ID"), "{out}");
    let registry = uuid::Uuid::now_v7();
    let (_, err) = run(
        &[
            "deploy",
            "create",
            &format!("{registry}/acme/llm:1.0"),
            "--name",
            "llm",
            "--namespace",
            "models",
            "--gpus",
            "1",
        ],
        true,
    );
    assert!(
        err.contains("404") && err.contains("unknown registry"),
        "{err}"
    );
    let (_, err) = run(&["deploy", "create", "garbage", "--name", "llm"], true);
    assert!(err.contains("422"), "{err}");
}
