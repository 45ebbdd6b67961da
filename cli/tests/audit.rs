//! `imagelib audit` against a real `imagelib serve` (in-process, port 0), NATS, PostgreSQL
//! and docker-registry: what commands made the CLI shows up in the trail, as a table and as
//! JSON, filtered; bad filters are refused with the right exit code.

use std::process::{Command, Stdio};
use std::time::Duration;

use imagelib::serve::Configs;
use imagelib_platform::config::CommonConfig;
use imagelib_testkit::registry::TestRegistry;
use imagelib_testkit::{TestDb, TestStream};
use serde_json::Value;

const ADMIN: &str = "cli-audit-admin-token";

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

/// Runs the CLI: exit code, stdout, stderr.
fn imagelib(server: &Server, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_imagelib"))
        .args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("IMAGELIB_URL", &server.url)
        .env("IMAGELIB_TOKEN", ADMIN)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(server: &Server, args: &[&str]) -> String {
    let (code, out, err) = imagelib(server, args);
    assert_eq!(code, 0, "{args:?}\nstdout: {out}\nstderr: {err}");
    out
}

fn types(json: &str) -> Vec<String> {
    serde_json::from_str::<Value>(json).unwrap()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_audit_trail_through_the_cli() {
    let (stream, db) = (TestStream::new(), TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&stream, &db, dir.path()).await;
    let registry = TestRegistry::start().await.unwrap();
    let run = |args: &[&str]| tokio::task::block_in_place(|| ok(&server, args));
    let out = run(&[
        "--json",
        "registry",
        "add",
        "--label",
        "audited",
        "--url",
        &format!("127.0.0.1:{}", registry.port()),
        "--insecure",
    ]);
    let id = serde_json::from_str::<Value>(&out).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    run(&[
        "rules",
        "set",
        &id,
        "nim",
        "--repositories",
        "nvidia/nim/*",
        "--kind",
        "model",
    ]);

    // The projection is asynchronous: wait for the rule in the trail.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let out = run(&["--json", "audit", "--registry", &id]);
        if types(&out).contains(&"io.imagelib.rule.set.v1".to_owned()) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no rule.set in {out}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // The table: who, what, when, subject, trace id.
    let table = run(&["audit", "--registry", &id]);
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    for column in ["WHEN (UTC)", "WHO", "WHAT", "SUBJECT", "TRACE ID"] {
        assert!(header.contains(column), "{table}");
    }
    let registered = table
        .lines()
        .find(|l| l.contains("registry.registered: registered \"audited\""))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(registered.contains("  admin  "), "{registered}");
    assert!(
        registered.contains(&format!("registry/{id}")),
        "{registered}"
    );
    let trace = registered.split_whitespace().last().unwrap();
    assert!(
        trace.len() == 32 && trace.bytes().all(|b| b.is_ascii_hexdigit()),
        "{registered}"
    );
    let rule = table
        .lines()
        .find(|l| l.contains("rule.set: rule nim set"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(rule.contains("  admin  "), "{rule}");

    // JSON and filters.
    let json = run(&["--json", "audit", "--type", "rule.*", "--actor", "admin"]);
    assert_eq!(types(&json), ["io.imagelib.rule.set.v1"], "{json}");
    let entry = &serde_json::from_str::<Value>(&json).unwrap()["items"][0];
    assert_eq!(entry["link"], format!("/v1/registries/{id}/rules/nim"));
    let recent = types(&run(&[
        "--json",
        "audit",
        "--since",
        "1h",
        "--registry",
        &id,
    ]));
    assert!(recent.len() >= 2, "{recent:?}");
    let (code, out, err) = tokio::task::block_in_place(|| {
        imagelib(&server, &["audit", "--until", "1h", "--registry", &id])
    });
    assert_eq!((code, out.lines().count()), (0, 1), "{out}{err}");
    assert!(err.contains("no audit entries match"), "{err}");
    // Every page, one entry at a time.
    let all = types(&run(&[
        "--json",
        "audit",
        "--registry",
        &id,
        "--all",
        "--limit",
        "1",
    ]));
    // Entries keep arriving (the scanner's sync of the new rule): they come first.
    assert!(all.len() >= recent.len(), "{all:?}");
    assert_eq!(all[all.len() - recent.len()..], recent[..], "{all:?}");
    let (_, _, err) = tokio::task::block_in_place(|| {
        imagelib(&server, &["audit", "--registry", &id, "--limit", "1"])
    });
    assert!(err.contains("more match: add --all"), "{err}");

    // Refusals: the server's (422, exit 4) and the CLI's own (usage, exit 2).
    let (code, _, err) =
        tokio::task::block_in_place(|| imagelib(&server, &["audit", "--type", "nothing.such"]));
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("422") && err.contains("type"), "{err}");
    let (code, _, err) =
        tokio::task::block_in_place(|| imagelib(&server, &["audit", "--since", "yesterday"]));
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = tokio::task::block_in_place(|| {
        imagelib(
            &server,
            &[
                "audit",
                "--since",
                "2025-03-02T00:00:00Z",
                "--until",
                "2025-03-01T00:00:00Z",
            ],
        )
    });
    assert_eq!(code, 2, "{err}");
}
