//! The CLI at parity with the API, run as the real `imagelib` binary against a real
//! `imagelib serve` (NATS, PostgreSQL, docker-registry): every credential kind, update and
//! rotation, curation, `-o`, the token file, and the exit code of each class of failure.

use std::io::Write;
use std::process::{Command, Stdio};

use imagelib::serve::Configs;
use imagelib_platform::config::CommonConfig;
use imagelib_testkit::registry::{ImageSpec, TestRegistry};
use imagelib_testkit::{TestDb, TestStream};
use serde_json::Value;

const ADMIN: &str = "parity-admin-token";

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

/// What one run of the binary did.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "{self:#?}");
        self
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("{e}: {self:#?}"))
    }
}

/// Run `imagelib` with `env` (besides PATH) and `stdin`; nothing else from this process.
fn run_env(env: &[(&str, &str)], args: &[&str], stdin: &str) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_imagelib"));
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
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
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn cli(server: &Server, args: &[&str], stdin: &str) -> Run {
    tokio::task::block_in_place(|| {
        run_env(
            &[("IMAGELIB_URL", &server.url), ("IMAGELIB_TOKEN", ADMIN)],
            args,
            stdin,
        )
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn every_credential_kind_reaches_the_api_from_stdin_or_a_file() {
    let (stream, db) = (TestStream::new(), TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&stream, &db, dir.path()).await;
    let registry = TestRegistry::builder()
        .htpasswd("robot", "parity-basic-canary")
        .start()
        .await
        .unwrap();
    let url = registry.host();
    let file = |name: &str, content: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, content).unwrap();
        p.to_str().unwrap().to_owned()
    };

    // basic, the password from a file, validated against the real registry.
    let pw = file("pw", "parity-basic-canary\n");
    let basic = cli(
        &server,
        &[
            "-o",
            "json",
            "registry",
            "add",
            "--label",
            "basic",
            "--url",
            &url,
            "--insecure",
            "--username",
            "robot",
            "--secret-file",
            &pw,
        ],
        "",
    );
    let basic = basic.ok().json();
    assert_eq!(basic["status"], "validated", "{basic}");
    assert_eq!(basic["auth_kind"], "basic");

    // token, from stdin.
    let token = cli(
        &server,
        &[
            "--json",
            "registry",
            "add",
            "--label",
            "token",
            "--url",
            &url,
            "--insecure",
            "--token-stdin",
            "--no-validate",
        ],
        "parity-token-canary\n",
    );
    assert_eq!(token.ok().json()["auth_kind"], "token");

    // ECR: the secret access key from stdin, the session token from a file.
    let session = file("session", "parity-session-canary");
    let ecr = cli(
        &server,
        &[
            "--json",
            "registry",
            "add",
            "--label",
            "ecr",
            "--type",
            "ecr",
            "--url",
            "123456789012.dkr.ecr.eu-west-1.amazonaws.com",
            "--aws-access-key-id",
            "AKIAPARITY",
            "--region",
            "eu-west-1",
            "--password-stdin",
            "--session-token-file",
            &session,
            "--no-validate",
        ],
        "parity-aws-secret-canary\n",
    );
    assert_eq!(ecr.ok().json()["auth_kind"], "aws_ecr");

    // ACR service principal: the client secret from a file.
    let secret = file("acr", "parity-acr-canary\n");
    let acr = cli(
        &server,
        &[
            "--json",
            "registry",
            "add",
            "--label",
            "acr",
            "--type",
            "acr",
            "--url",
            "parity.azurecr.io",
            "--tenant-id",
            "tenant-1",
            "--client-id",
            "client-1",
            "--secret-file",
            &secret,
            "--no-validate",
        ],
        "",
    );
    assert_eq!(acr.ok().json()["auth_kind"], "azure_service_principal");

    // Artifact Registry: the service-account key JSON from stdin, sent as `_json_key`.
    let key = r#"{"type":"service_account","client_email":"scanner@p.iam.gserviceaccount.com","private_key":"parity-gcp-canary"}"#;
    let gcp = cli(
        &server,
        &[
            "--json",
            "registry",
            "add",
            "--label",
            "gar",
            "--type",
            "gcr",
            "--url",
            "europe-docker.pkg.dev/parity/images",
            "--auth",
            "gcp-service-account-key",
            "--password-stdin",
            "--no-validate",
        ],
        key,
    );
    assert_eq!(gcp.ok().json()["auth_kind"], "basic");
    // Not a service-account key: refused before anything is sent.
    let wrong = cli(
        &server,
        &[
            "registry",
            "add",
            "--label",
            "gar2",
            "--type",
            "gcr",
            "--url",
            "europe-docker.pkg.dev/p/i",
            "--auth",
            "gcp-service-account-key",
            "--password-stdin",
            "--no-validate",
        ],
        r#"{"type":"authorized_user"}"#,
    );
    assert_eq!(wrong.code, 2, "{wrong:#?}");

    // Every registry arrived, and no secret is in anything the API or CLI printed.
    let ls = cli(&server, &["-o", "json", "registry", "ls"], "");
    let all = ls.ok().stdout.clone();
    let kinds: Vec<String> = ls
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["auth_kind"].as_str().unwrap().to_owned())
        .collect();
    for k in ["basic", "token", "aws_ecr", "azure_service_principal"] {
        assert!(kinds.iter().any(|x| x == k), "{k} missing: {kinds:?}");
    }
    assert_eq!(kinds.len(), 5, "{kinds:?}");
    for canary in [
        "parity-basic-canary",
        "parity-token-canary",
        "parity-aws-secret-canary",
        "parity-session-canary",
        "parity-acr-canary",
        "parity-gcp-canary",
    ] {
        assert!(!all.contains(canary), "{canary} in {all}");
    }

    // A secret on the command line is refused (usage, exit 2) and nothing is registered.
    for args in [
        vec![
            "registry",
            "add",
            "--label",
            "x",
            "--url",
            url.as_str(),
            "--username",
            "robot",
            "--password",
            "parity-basic-canary",
        ],
        vec![
            "registry",
            "rotate-credentials",
            basic["id"].as_str().unwrap(),
            "--username",
            "robot",
            "--password",
            "parity-basic-canary",
        ],
    ] {
        let r = cli(&server, &args, "");
        assert_eq!(r.code, 2, "{r:#?}");
        assert!(
            r.stderr.contains("--password-stdin") && r.stderr.contains("ps"),
            "{r:#?}"
        );
    }
    // A kind without its secret says where the secret comes from.
    let r = cli(
        &server,
        &[
            "registry",
            "add",
            "--label",
            "x",
            "--url",
            &url,
            "--username",
            "robot",
        ],
        "",
    );
    assert_eq!(r.code, 2, "{r:#?}");
    assert!(
        r.stderr.contains("stdin") && r.stderr.contains("--secret-file"),
        "{r:#?}"
    );
    let after = cli(&server, &["-o", "json", "registry", "ls"], "").json();
    assert_eq!(after.as_array().unwrap().len(), 5);
}

#[tokio::test(flavor = "multi_thread")]
async fn update_rotate_formats_token_file_and_exit_codes() {
    let (stream, db) = (TestStream::new(), TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&stream, &db, dir.path()).await;
    let registry = TestRegistry::builder()
        .htpasswd("robot", "parity-pw-1")
        .start()
        .await
        .unwrap();
    let other = TestRegistry::builder()
        .htpasswd("robot", "parity-pw-2")
        .start()
        .await
        .unwrap();
    let url = registry.host();
    let added = cli(
        &server,
        &[
            "--json",
            "registry",
            "add",
            "--label",
            "before",
            "--url",
            &url,
            "--insecure",
            "--username",
            "robot",
            "--password-stdin",
        ],
        "parity-pw-1\n",
    );
    let id = added.ok().json()["id"].as_str().unwrap().to_owned();

    // Rename: the CLI sends the ETag of a fresh GET as If-Match.
    let renamed = cli(
        &server,
        &["--json", "registry", "update", &id, "--label", "after"],
        "",
    );
    assert_eq!(renamed.ok().json()["label"], "after");
    assert_eq!(renamed.json()["report_pulls"], false);

    // Pull counting, on and off again.
    let pulls_on = cli(
        &server,
        &["--json", "registry", "update", &id, "--report-pulls"],
        "",
    );
    assert_eq!(pulls_on.ok().json()["report_pulls"], true);
    let pulls_off = cli(
        &server,
        &["--json", "registry", "update", &id, "--report-pulls=false"],
        "",
    );
    assert_eq!(pulls_off.ok().json()["report_pulls"], false);

    // A move without credentials: refused (422 credentials-required), exit 4, nothing changed.
    let other_url = other.host();
    let moved = cli(
        &server,
        &["registry", "update", &id, "--url", &other_url, "--insecure"],
        "",
    );
    assert_eq!(moved.code, 4, "{moved:#?}");
    assert!(
        moved.stderr.contains("422") && moved.stderr.contains("credentials-required"),
        "{moved:#?}"
    );
    // With the new registry's credentials, the move is validated there and saved.
    let moved = cli(
        &server,
        &[
            "--json",
            "registry",
            "update",
            &id,
            "--url",
            &other_url,
            "--insecure",
            "--username",
            "robot",
            "--password-stdin",
        ],
        "parity-pw-2\n",
    );
    let moved = moved.ok().json();
    assert_eq!(moved["url"].as_str().unwrap(), other_url, "{moved}");

    // A stale ETag: conflict, exit 5.
    let stale = cli(
        &server,
        &[
            "registry",
            "update",
            &id,
            "--label",
            "stale",
            "--if-match",
            "\"1\"",
        ],
        "",
    );
    assert_eq!(stale.code, 5, "{stale:#?}");

    // Rotation: a wrong password is refused by validation (exit 4), the right one is saved.
    let wrong = cli(
        &server,
        &[
            "registry",
            "rotate-credentials",
            &id,
            "--username",
            "robot",
            "--password-stdin",
        ],
        "nope\n",
    );
    assert_eq!(wrong.code, 4, "{wrong:#?}");
    let pw = dir.path().join("pw2");
    std::fs::write(&pw, "parity-pw-2").unwrap();
    let rotated = cli(
        &server,
        &[
            "--json",
            "registry",
            "rotate-credentials",
            &id,
            "--username",
            "robot",
            "--secret-file",
            pw.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(rotated.ok().json()["status"], "validated");

    // -o yaml is YAML holding the same document as -o json; --json is -o json.
    let as_json = cli(&server, &["-o", "json", "registry", "show", &id], "").json();
    let yaml = cli(&server, &["-o", "yaml", "registry", "show", &id], "");
    let as_yaml: Value = serde_norway::from_str(&yaml.ok().stdout).unwrap();
    assert_eq!(as_yaml, as_json);
    assert_eq!(
        cli(&server, &["--json", "registry", "show", &id], "").json(),
        as_json
    );
    let listed: Value = serde_norway::from_str(
        &cli(&server, &["registry", "ls", "-o", "yaml"], "")
            .ok()
            .stdout,
    )
    .unwrap();
    assert_eq!(listed[0]["id"], as_json["id"]);
    let table = cli(&server, &["registry", "ls"], "");
    assert!(table.ok().stdout.starts_with("ID"), "{table:#?}");
    let both = cli(&server, &["--json", "-o", "yaml", "registry", "ls"], "");
    assert_eq!(both.code, 2, "{both:#?}");

    let base = [("IMAGELIB_URL", server.url.as_str())];
    let run = |env: &[(&str, &str)], args: &[&str]| {
        tokio::task::block_in_place(|| run_env(env, args, ""))
    };
    // The token from a file (flag or IMAGELIB_TOKEN_FILE); never from a flag.
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{ADMIN}\n")).unwrap();
    let tf = token_file.to_str().unwrap();
    run(&base, &["registry", "show", &id, "--token-file", tf]).ok();
    run(
        &[base[0], ("IMAGELIB_TOKEN_FILE", tf)],
        &["registry", "show", &id],
    )
    .ok();
    let flag = run(&base, &["--token", ADMIN, "registry", "ls"]);
    assert_eq!(flag.code, 2, "{flag:#?}");
    assert!(
        flag.stderr.contains("IMAGELIB_TOKEN") && flag.stderr.contains("--token-file"),
        "{flag:#?}"
    );

    // Exit codes: usage 2, not found 3, refused 4, server or network 6.
    assert_eq!(run(&base, &["registry", "frobnicate"]).code, 2);
    let missing = cli(
        &server,
        &["registry", "show", "0190d5c2-7a1e-7c3b-9f00-5d1e2f3a4b5c"],
        "",
    );
    assert_eq!(missing.code, 3, "{missing:#?}");
    let anonymous = run(&base, &["registry", "ls"]);
    assert_eq!(anonymous.code, 4, "{anonymous:#?}");
    assert!(anonymous.stderr.contains("401"), "{anonymous:#?}");
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let down = run(
        &[
            ("IMAGELIB_URL", &format!("http://{closed}")),
            ("IMAGELIB_TOKEN", ADMIN),
        ],
        &["registry", "ls"],
    );
    assert_eq!(down.code, 6, "{down:#?}");
    // A server that accepts and never answers: the request timeout, exit 6.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!("http://{}", silent.local_addr().unwrap());
    let started = std::time::Instant::now();
    let hung = run(
        &[
            ("IMAGELIB_URL", &silent_url),
            ("IMAGELIB_TOKEN", ADMIN),
            ("IMAGELIB_TIMEOUT", "1"),
        ],
        &["registry", "ls"],
    );
    assert_eq!(hung.code, 6, "{hung:#?}");
    assert!(hung.stderr.contains("--timeout"), "{hung:#?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    drop(silent);

    // The container healthcheck: 0 when ready, 1 when nothing answers.
    let ready = run(
        &[],
        &["healthcheck", "--url", &format!("{}/readyz", server.url)],
    );
    assert_eq!(ready.code, 0, "{ready:#?}");
    let port = server.url.rsplit(':').next().unwrap();
    let by_addr = run(
        &[("IMAGELIB_HTTP_ADDR", &format!("0.0.0.0:{port}"))],
        &["healthcheck"],
    );
    assert_eq!(by_addr.code, 0, "{by_addr:#?}");
    let dead = run(
        &[],
        &["healthcheck", "--url", &format!("http://{closed}/readyz")],
    );
    assert_eq!(dead.code, 1, "{dead:#?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn curation_through_the_cli() {
    let (stream, db) = (TestStream::new(), TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&stream, &db, dir.path()).await;
    let registry = TestRegistry::start().await.unwrap();
    registry
        .push_image("library/postgres", "16.1", &ImageSpec::linux_amd64())
        .await
        .unwrap();
    let id = cli(
        &server,
        &[
            "--json",
            "registry",
            "add",
            "--label",
            "curation",
            "--url",
            &registry.host(),
            "--insecure",
        ],
        "",
    )
    .ok()
    .json()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    cli(
        &server,
        &[
            "rules",
            "set",
            &id,
            "db",
            "--repositories",
            "library/postgres",
            "--kind",
            "database",
        ],
        "",
    )
    .ok();
    cli(&server, &["registry", "sync", &id, "--wait"], "").ok();
    let repo = format!("{id}/library/postgres");
    let tag = format!("{repo}:16.1");
    // The catalog follows the stream on its own consumer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while cli(&server, &["images", "show", &tag], "").code != 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the tag never reached the catalog"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }

    let show = |r: &str| cli(&server, &["-o", "json", "images", "show", r], "").json();
    cli(
        &server,
        &["images", "label", &repo, "approved-production"],
        "",
    )
    .ok();
    cli(&server, &["images", "label", &tag, "lts"], "").ok();
    let r = show(&repo);
    assert!(
        r["curator_hm_tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "approved-production"),
        "{r}"
    );
    assert!(
        show(&tag)["hm_tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "lts")
    );
    cli(
        &server,
        &["images", "unlabel", &repo, "approved-production"],
        "",
    )
    .ok();
    assert!(
        !show(&repo)["curator_hm_tags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t == "approved-production")
    );

    cli(
        &server,
        &["images", "readme", &repo],
        "# PostgreSQL\nThe community build.\n",
    )
    .ok();
    assert!(
        show(&repo)["readme"]["readme"]
            .as_str()
            .unwrap()
            .contains("The community build.")
    );
    let file = dir.path().join("README.md");
    std::fs::write(&file, "Tag notes for 16.1").unwrap();
    cli(
        &server,
        &["images", "readme", &tag, file.to_str().unwrap()],
        "",
    )
    .ok();
    assert!(
        show(&tag)["readme"]["readme"]
            .as_str()
            .unwrap()
            .contains("Tag notes")
    );

    cli(
        &server,
        &["images", "approve", &tag, "--reason", "scanned clean"],
        "",
    )
    .ok();
    assert_eq!(show(&tag)["tag_approval"]["decision"], "approved");
    cli(
        &server,
        &["images", "reject", &repo, "--reason", "end of life"],
        "",
    )
    .ok();
    assert_eq!(show(&repo)["approval"]["decision"], "rejected");

    // A rejection without a reason is a usage error; an unknown repository is not found.
    assert_eq!(
        cli(&server, &["images", "reject", &repo, "--reason", " "], "").code,
        2
    );
    let missing = cli(
        &server,
        &["images", "label", &format!("{id}/no/such"), "x"],
        "",
    );
    assert_eq!(missing.code, 3, "{missing:#?}");
    // A bad HM tag is refused by the API (exit 4).
    let bad = cli(&server, &["images", "label", &repo, "Not An HM Tag"], "");
    assert_eq!(bad.code, 4, "{bad:#?}");
}
