//! The `imagelib` CLI against a real `imagelib serve` (in-process, port 0), a real NATS,
//! PostgreSQL and docker-registry.

use std::io::Write;
use std::process::{Command, Stdio};

use imagelib::serve::Configs;
use imagelib_platform::config::CommonConfig;
use imagelib_testkit::registry::{ImageSpec, TestRegistry};
use imagelib_testkit::{TestDb, TestStream};

const ADMIN: &str = "cli-admin-token";

struct Server {
    url: String,
    common: CommonConfig,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn serve(stream: &TestStream, db: &TestDb, dir: &std::path::Path) -> Server {
    serve_with(stream, db, dir, false).await
}

async fn serve_with(
    stream: &TestStream,
    db: &TestDb,
    dir: &std::path::Path,
    anonymous_read: bool,
) -> Server {
    let common = CommonConfig {
        anonymous_read,
        nats_url: stream.nats_url.clone(),
        database_url: db.url.clone(),
        stream: stream.name.clone(),
        subject_prefix: stream.prefix.clone(),
        http_addr: Some(([127, 0, 0, 1], 0).into()),
        master_key_file: dir.join("master.key"),
        gitops_dir: dir.join("gitops"),
        admin_token: Some(ADMIN.into()),
        // Test registries listen on loopback, which the guard denies by default.
        allow_networks: Some(imagelib_testkit::LOOPBACK_NETWORKS.into()),
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

const EXTENSIONS: &str = r#"[{"name":"pgvector","version":"0.7.0","description":"vector search"}]"#;

/// Real images in a real registry, discovered by a real scan and projected into the
/// catalog, read back through `images`, `models`, `stats` and `events tail`.
#[tokio::test(flavor = "multi_thread")]
async fn catalog_through_the_cli() {
    let (stream, db) = (TestStream::new(), TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&stream, &db, dir.path()).await;
    let registry = TestRegistry::start().await.unwrap();
    let postgres = registry
        .push_image(
            "library/postgres",
            "16.1",
            &ImageSpec::linux_amd64()
                .label("io.imagelib.postgres.extensions", EXTENSIONS)
                .label("org.opencontainers.image.vendor", "PGDG"),
        )
        .await
        .unwrap();
    let llama = registry
        .push_index(
            "acme/llama-instruct",
            "1.0",
            &[
                ImageSpec::linux_amd64(),
                ImageSpec::new("linux", "arm64").variant("v8"),
            ],
            &[],
        )
        .await
        .unwrap();
    let llama_old = registry
        .push_image(
            "acme/llama-instruct",
            "0.9",
            &ImageSpec::linux_amd64().layer(b"old weights"),
        )
        .await
        .unwrap();
    registry
        .push_image(
            "tools/busybox",
            "1.36",
            &ImageSpec::linux_amd64().layer(b"busybox"),
        )
        .await
        .unwrap();

    let run = |args: &[&str], fail: bool| {
        tokio::task::block_in_place(|| imagelib(&server, args, "", fail))
    };
    let json = |out: &str| -> serde_json::Value {
        serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
    };

    let (out, _) = run(
        &[
            "--json",
            "registry",
            "add",
            "--label",
            "cli-catalog",
            "--url",
            &registry.host(),
            "--insecure",
        ],
        false,
    );
    let id = json(&out)["id"].as_str().unwrap().to_owned();
    run(
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
        false,
    );
    run(
        &[
            "rules",
            "set",
            &id,
            "models",
            "--repositories",
            "acme/*",
            "--kind",
            "model",
            "--hm-tag",
            "gpu",
            "--description",
            "Instruction-tuned Llama",
        ],
        false,
    );
    run(
        &["rules", "set", &id, "tools", "--repositories", "tools/*"],
        false,
    );
    // `--wait` waits for the scan that started after the request, so it saw every rule.
    let (out, _) = run(&["registry", "sync", &id, "--wait"], false);
    assert!(
        out.contains("scan completed: 3 repositories, 4 tags seen"),
        "{out}"
    );
    // The catalog follows the stream on its own consumer.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let stats = loop {
        let (out, _) = run(&["--json", "stats"], false);
        let stats = json(&out);
        if stats["tags"] == 4 || std::time::Instant::now() > deadline {
            break stats;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let counts = |v: &serde_json::Value| {
        [
            "tags",
            "database_images",
            "model_images",
            "other_images",
            "repositories",
            "registries",
        ]
        .map(|k| v[k].as_i64().unwrap_or(-1))
    };
    assert_eq!(counts(&stats), [4, 1, 2, 1, 3, 1], "{stats}");
    let (out, _) = run(&["stats"], false);
    let mut lines = out.lines();
    assert!(
        lines
            .next()
            .unwrap()
            .starts_with("TAGS  DATABASE IMAGES  MODEL IMAGES  OTHER"),
        "{out}"
    );
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row, ["4", "1", "2", "1", "3", "1", "0"], "{out}");

    // The Image Library as a table: label, repository, tag, kind, short digest, arch.
    let (out, _) = run(&["images", "ls"], false);
    assert!(out.starts_with("REGISTRY"), "{out}");
    let short = |d: &str| d[..("sha256:".len() + 12)].to_owned();
    let row_of = |out: &str, repo: &str, tag: &str| -> Vec<String> {
        out.lines()
            .map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
            .find(|c| {
                c.get(1).map(String::as_str) == Some(repo)
                    && c.get(2).map(String::as_str) == Some(tag)
            })
            .unwrap_or_else(|| panic!("no row {repo}:{tag} in\n{out}"))
    };
    assert_eq!(out.lines().count(), 5, "{out}");
    let pg = row_of(&out, "library/postgres", "16.1");
    assert_eq!(
        pg[..7],
        [
            "cli-catalog",
            "library/postgres",
            "16.1",
            "database",
            "-",
            &short(&postgres.digest),
            "amd64"
        ],
        "{out}"
    );
    assert!(
        !out.contains(&postgres.digest),
        "digests are shortened: {out}"
    );
    let ll = row_of(&out, "acme/llama-instruct", "1.0");
    assert_eq!(
        ll[3..7],
        [
            "model",
            "text-completion",
            &short(&llama.digest),
            "amd64,arm64"
        ],
        "{out}"
    );
    assert_eq!(row_of(&out, "tools/busybox", "1.36")[3], "other", "{out}");

    // Filters reach the server: kind, architecture, repository.
    let (out, _) = run(&["images", "ls", "--kind", "model", "--json"], false);
    let page = json(&out);
    let mut models: Vec<(String, String, String)> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i["kind"], "model", "{i}");
            assert_eq!(i["model_type"], "text-completion", "{i}");
            assert!(
                i["hm_tags"].as_array().unwrap().contains(&"gpu".into()),
                "{i}"
            );
            (
                i["repository"].as_str().unwrap().to_owned(),
                i["tag"].as_str().unwrap().to_owned(),
                i["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    models.sort();
    assert_eq!(
        models,
        [
            (
                "acme/llama-instruct".into(),
                "0.9".into(),
                llama_old.digest.clone()
            ),
            (
                "acme/llama-instruct".into(),
                "1.0".into(),
                llama.digest.clone()
            ),
        ]
    );
    assert!(page["next_cursor"].is_null(), "{page}");
    let (out, _) = run(&["images", "ls", "--arch", "arm64", "--json"], false);
    let items = json(&out)["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1, "{out}");
    assert_eq!(
        items[0]["reference"],
        format!("{id}/acme/llama-instruct:1.0")
    );
    let (out, _) = run(
        &[
            "images",
            "ls",
            "--repository",
            "tools/busybox",
            "--registry",
            &id,
        ],
        false,
    );
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("tools/busybox"), "{out}");

    // Keyset pagination: one page says there is more; --all follows next_cursor.
    let (out, err) = run(&["images", "ls", "--limit", "1"], false);
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(out.contains("acme/llama-instruct  0.9"), "{out}");
    assert!(err.contains("--all"), "{err}");
    let (out, _) = run(
        &[
            "images", "ls", "--limit", "1", "--all", "--sort", "name", "--json",
        ],
        false,
    );
    let all = json(&out);
    let tags: Vec<String> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            format!(
                "{}:{}",
                i["repository"].as_str().unwrap(),
                i["tag"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        tags,
        [
            "acme/llama-instruct:0.9",
            "acme/llama-instruct:1.0",
            "library/postgres:16.1",
            "tools/busybox:1.36"
        ],
        "{all}"
    );
    assert!(all["next_cursor"].is_null());

    // The Model Library.
    let (out, _) = run(&["models", "ls"], false);
    assert_eq!(out.lines().count(), 3, "{out}");
    assert!(
        out.contains("acme/llama-instruct") && !out.contains("library/postgres"),
        "{out}"
    );
    let (out, err) = run(&["models", "ls", "--model-type", "reranker"], false);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(err.contains("no models match"), "{err}");

    // A repository with its tags, and one tag's details.
    let (out, _) = run(
        &["images", "show", &format!("{id}/acme/llama-instruct")],
        false,
    );
    assert!(out.contains("model (text-completion)"), "{out}");
    assert!(out.contains("cli-catalog"), "{out}");
    assert!(
        out.contains("hm tags       gpu (rule: gpu; curators: -)"),
        "{out}"
    );
    assert!(
        out.contains("description   Instruction-tuned Llama"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("rule") && l.contains("models")),
        "{out}"
    );
    assert!(out.contains("2 (0 database, 2 model)"), "{out}");
    let tag_rows: Vec<&str> = out
        .lines()
        .skip_while(|l| !l.starts_with("TAG "))
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(tag_rows, ["0.9", "1.0"], "{out}");
    let (out, _) = run(
        &[
            "--json",
            "images",
            "show",
            &format!("{id}/acme/llama-instruct"),
        ],
        false,
    );
    let repo = json(&out);
    assert_eq!(repo["name"], "acme/llama-instruct");
    assert_eq!(repo["tags"].as_array().unwrap().len(), 2);

    let (out, _) = run(
        &["images", "show", &format!("{id}/acme/llama-instruct:1.0")],
        false,
    );
    assert!(
        out.contains(&format!("digest        {}", llama.digest)),
        "{out}"
    );
    for (platform, m) in ["linux/amd64", "linux/arm64/v8"]
        .iter()
        .zip(&llama.manifests)
    {
        assert!(
            out.lines()
                .any(|l| l.contains(platform) && l.contains(&m.digest)),
            "{platform} {}: {out}",
            m.digest
        );
    }
    let (out, _) = run(
        &["images", "show", &format!("{id}/library/postgres:16.1")],
        false,
    );
    assert!(out.contains(&postgres.digest), "{out}");
    assert!(out.contains("kind          database"), "{out}");
    assert!(out.contains("pgvector 0.7.0: vector search"), "{out}");
    assert!(
        out.contains("org.opencontainers.image.vendor=PGDG"),
        "{out}"
    );
    assert!(out.contains(&format!("({} bytes)", postgres.size)), "{out}");
    let (out, _) = run(
        &[
            "--json",
            "images",
            "show",
            &format!("{id}/library/postgres:16.1"),
        ],
        false,
    );
    let tag = json(&out);
    assert_eq!(tag["tag"], "16.1");
    assert_eq!(tag["extensions"][0]["name"], "pgvector");
    let (_, err) = run(
        &["images", "show", &format!("{id}/library/postgres:17")],
        true,
    );
    assert!(err.contains("no tag `17`") && err.contains("16.1"), "{err}");

    // The stream, one line per event.
    let (out, _) = run(
        &["events", "tail", "--pretty", "--type", "tag_discovered"],
        false,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines.iter().all(|l| l.contains("image.tag_discovered")),
        "{out}"
    );
    let pg_line = lines
        .iter()
        .find(|l| l.contains(&format!("{id}/library/postgres:16.1")))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        pg_line.contains("kind=database")
            && pg_line.contains(&format!("digest={}", short(&postgres.digest))),
        "{pg_line}"
    );
    let seq: u64 = pg_line.split_whitespace().next().unwrap().parse().unwrap();
    assert!(seq > 1, "{pg_line}");
    let ll_line = lines
        .iter()
        .find(|l| l.contains(&format!("{id}/acme/llama-instruct:1.0")))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(
        ll_line.contains("kind=model") && ll_line.contains("platforms=amd64,arm64/v8"),
        "{ll_line}"
    );
    let (out, _) = run(
        &["events", "tail", "--subject", "acme/llama-instruct"],
        false,
    );
    let events: Vec<serde_json::Value> = out.lines().map(json).collect();
    assert_eq!(events.len(), 2, "{out}");
    assert!(
        events
            .iter()
            .all(|e| e["type"] == "io.imagelib.image.tag_discovered.v1"
                && e["subject"]
                    .as_str()
                    .unwrap()
                    .contains("acme/llama-instruct")),
        "{out}"
    );
    let (out, _) = run(
        &["events", "tail", "--pretty", "--subject", "no/such/thing"],
        false,
    );
    assert!(out.is_empty(), "{out}");

    // Bad input says what to type; server problems come through the client's error path.
    let (_, err) = run(&["images", "show", "nosuchformat"], true);
    assert!(err.contains("<registry-id>/<repository>[:<tag>]"), "{err}");
    let (_, err) = run(&["images", "show", "acme/llama-instruct"], true);
    assert!(err.contains("not a registry id"), "{err}");
    let (_, err) = run(&["images", "ls", "--kind", "bogus"], true);
    assert!(
        err.contains("possible values: database, model, other"),
        "{err}"
    );
    let (_, err) = run(&["images", "ls", "--as-of", "yesterday"], true);
    assert!(err.contains("RFC 3339"), "{err}");
    let (_, err) = run(&["images", "ls", "--approved", "maybe"], true);
    assert!(err.contains("true") && err.contains("false"), "{err}");
    let (_, err) = run(&["models", "ls", "--kind", "database"], true);
    assert!(err.contains("model images only"), "{err}");
    let (_, err) = run(&["images", "ls", "--hm-tag", "Not A Tag!"], true);
    assert!(err.contains("422"), "{err}");
    let (_, err) = run(
        &[
            "images",
            "show",
            &format!("{}/nope/nothing", uuid::Uuid::now_v7()),
        ],
        true,
    );
    assert!(err.contains("404") && err.contains("images ls"), "{err}");
}

/// The quickstart's `imagelib demo` says whether the server lets a GET without a token
/// read, so nobody runs with anonymous reads on without being told.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_says_whether_anonymous_reads_are_on() {
    let registry = TestRegistry::start().await.unwrap();
    let target = format!("127.0.0.1:{}", registry.port());
    for (anonymous, says) in [
        (true, "anonymous reads are on (IMAGELIB_ANONYMOUS_READ=true"),
        (false, "anonymous reads are off"),
    ] {
        let (stream, db) = (TestStream::new(), TestDb::new());
        let dir = tempfile::tempdir().unwrap();
        let server = serve_with(&stream, &db, dir.path(), anonymous).await;
        let (out, _) = imagelib(
            &server,
            &["demo", "--registry", &target, "--no-wait"],
            "",
            false,
        );
        assert!(out.contains("registered the demo registry"), "{out}");
        assert!(out.contains(says), "anonymous_read={anonymous}: {out}");
    }
}

/// The quickstart's demo shows trust: the signed Llama NIM with a clean report passes the
/// `nim` rule's policy, the unsigned embedding NIM and the reranker with a critical CVE
/// fail it, and the deploy gate refuses the unsigned one with its reasons.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_has_a_signed_an_unsigned_and_a_vulnerable_model() {
    let registry = TestRegistry::start().await.unwrap();
    let target = format!("127.0.0.1:{}", registry.port());
    let (stream, db) = (TestStream::new(), TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&stream, &db, dir.path()).await;
    let (out, _) = imagelib(&server, &["demo", "--registry", &target], "", false);
    assert!(out.contains("trust policy: enforce"), "{out}");
    let http = reqwest::Client::new();
    let mut verdicts = std::collections::BTreeMap::new();
    for _ in 0..400 {
        let page: serde_json::Value = http
            .get(format!("{}/v1/models?limit=100", server.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        verdicts = page["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| {
                let verdict = i["trust"]["policy"]["verdict"].as_str()?;
                Some((
                    format!("{}:{}", i["repository"].as_str()?, i["tag"].as_str()?),
                    (verdict.to_owned(), i["trust"]["policy"]["reasons"].clone()),
                ))
            })
            .collect();
        if verdicts.len() >= 4 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let nim = |repo: &str| verdicts.get(&format!("nvidia/nim/{repo}")).cloned();
    assert_eq!(
        nim("llama-3.1-8b-instruct:1.0.3").map(|v| v.0).as_deref(),
        Some("pass"),
        "{verdicts:?}"
    );
    assert_eq!(
        nim("nv-rerankqa-mistral-4b-v3:1.0.2"),
        Some(("fail".into(), serde_json::json!(["severity_above_limit"]))),
        "{verdicts:?}"
    );
    assert_eq!(
        nim("nv-embedqa-e5-v5:1.1.0"),
        Some((
            "fail".into(),
            serde_json::json!(["unsigned", "no_vulnerability_report"])
        )),
        "{verdicts:?}"
    );
    let registry_id = verdicts_registry(&http, &server).await;
    let image = format!("{registry_id}/nvidia/nim/nv-embedqa-e5-v5:1.1.0");
    // The deployer's view of the verdicts is asynchronous: pending until it has them.
    let mut err = String::new();
    for _ in 0..100 {
        err = imagelib(
            &server,
            &["deploy", "create", &image, "--name", "embed"],
            "",
            true,
        )
        .1;
        if !err.contains("policy-pending") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        err.contains("[policy-violation]") && err.contains("unsigned"),
        "{err}"
    );
}

/// The quickstart's demo shows a second registry type: with the Harbor stand-in it fills
/// the stand-in's project, registers it as a `harbor` registry scoped to that project with
/// its robot account, and the scan lists it through Harbor's API (robots get no
/// `_catalog`) and records Harbor's scan summaries as the images' vulnerability reports.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_shows_a_harbor_registry_next_to_the_docker_registry() {
    let registry = TestRegistry::start().await.unwrap();
    let target = format!("127.0.0.1:{}", registry.port());
    let standin = imagelib_testkit::standin::HarborStandin::start()
        .await
        .unwrap();
    let (stream, db) = (TestStream::new(), TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("harbor.json");
    std::fs::write(&state, standin.state().to_string()).unwrap();
    let server = serve(&stream, &db, dir.path()).await;
    let (out, _) = imagelib(
        &server,
        &[
            "demo",
            "--registry",
            &target,
            "--harbor-standin",
            state.to_str().unwrap(),
        ],
        "",
        false,
    );
    assert!(
        out.contains("type harbor, robot account robot$ai+imagelib"),
        "{out}"
    );
    assert!(out.contains("Harbor scan completed: 2 tags seen"), "{out}");

    let http = reqwest::Client::new();
    let registries: serde_json::Value = http
        .get(format!("{}/v1/registries", server.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut types: Vec<&str> = registries["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["registry_type"].as_str())
        .collect();
    types.sort();
    assert_eq!(types, ["generic", "harbor"], "{registries}");
    let harbor_requests: Vec<String> = standin
        .harbor
        .seen()
        .iter()
        .map(|r| r.path().to_owned())
        .collect();
    assert!(
        harbor_requests
            .iter()
            .any(|p| p == "/api/v2.0/projects/ai/repositories"),
        "{harbor_requests:?}"
    );

    let mut found = std::collections::BTreeMap::new();
    for _ in 0..400 {
        let page: serde_json::Value = http
            .get(format!("{}/v1/models?limit=100", server.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        found = page["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|i| {
                i["repository"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("ai/"))
            })
            .filter_map(|i| {
                Some((
                    i["repository"].as_str()?.to_owned(),
                    i["trust"]["max_severity"].as_str()?.to_owned(),
                ))
            })
            .collect();
        if found.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        found
            .get("ai/nim/llama-3.1-8b-instruct")
            .map(String::as_str),
        Some("none"),
        "{found:?}"
    );
    assert_eq!(
        found
            .get("ai/nim/mistral-7b-instruct-v0.3")
            .map(String::as_str),
        Some("high"),
        "{found:?}"
    );
}

/// The `image.tag_mutated` events of the test's stream.
async fn mutations(stream: &TestStream) -> Vec<imagelib_events::event::TagMutated> {
    use imagelib_events::bus::{EventBus, StreamSettings};
    let bus = EventBus::from_client(
        stream.client().await.unwrap(),
        StreamSettings::new(&stream.name, &stream.prefix),
    );
    let mut replay = bus.replay(1, None, None).await.unwrap();
    let mut out = Vec::new();
    while let Some(item) = replay.next().await {
        if let Ok(e) = item.unwrap().event
            && let imagelib_events::EventPayload::TagMutated(m) = e.payload
        {
            out.push(m);
        }
    }
    out
}

/// The quickstart's demo shows tag integrity: after the first scan it re-pushes
/// `demo/postgresql:16.4` with other content and scans the repository, which finds the
/// versioned tag moved (`image.tag_mutated`, found by `scan`) and the catalog marks it; a
/// second run of the demo finds no second mutation.
#[tokio::test(flavor = "multi_thread")]
async fn the_demo_has_a_re_pushed_version() {
    let registry = TestRegistry::start().await.unwrap();
    let target = format!("127.0.0.1:{}", registry.port());
    let (stream, db) = (TestStream::new(), TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&stream, &db, dir.path()).await;
    let (out, _) = imagelib(&server, &["demo", "--registry", &target], "", false);
    assert!(out.contains("re-pushed demo/postgresql:16.4"), "{out}");
    let found = mutations(&stream).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let m = &found[0];
    let (_, now) = registry
        .get_manifest("demo/postgresql", "16.4")
        .await
        .unwrap();
    assert_eq!(
        (
            m.repository.as_str(),
            m.tag.as_str(),
            m.found_by,
            m.new_digest.as_str()
        ),
        (
            "demo/postgresql",
            "16.4",
            imagelib_events::model::MutationFoundBy::Scan,
            imagelib_testkit::registry::sha256_digest(&now)
                .await
                .unwrap()
                .as_str()
        )
    );
    assert_ne!(m.old_digest, m.new_digest);
    // The catalog marks the tag.
    let http = reqwest::Client::new();
    let mut marked = serde_json::Value::Null;
    for _ in 0..200 {
        marked = http
            .get(format!("{}/v1/images?mutated=true", server.url))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if marked["items"].as_array().is_some_and(|a| !a.is_empty()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let items: Vec<String> = marked["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| format!("{}:{}", s(&i["repository"]), s(&i["tag"])))
        .collect();
    assert_eq!(items, vec!["demo/postgresql:16.4"], "{marked}");

    // Again: the rebuild stays, nothing moves.
    let (out, _) = imagelib(&server, &["demo", "--registry", &target], "", false);
    assert!(out.contains("re-pushed demo/postgresql:16.4"), "{out}");
    assert_eq!(mutations(&stream).await.len(), 1);
}

fn s(v: &serde_json::Value) -> &str {
    v.as_str().unwrap_or_default()
}

async fn verdicts_registry(http: &reqwest::Client, server: &Server) -> String {
    let list: serde_json::Value = http
        .get(format!("{}/v1/registries", server.url))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    list["items"][0]["id"].as_str().unwrap().to_owned()
}
