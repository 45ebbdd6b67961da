//! `imagelib registry types` and a registration without `--url` for a type with one
//! address, and a registry's own proxy through the CLI: against a real `imagelib serve`
//! (in-process), NATS, PostgreSQL, a `docker-registry` and a recording forward proxy.

use std::io::Write;
use std::process::{Command, Stdio};

use imagelib::serve::Configs;
use imagelib_platform::config::CommonConfig;
use imagelib_testkit::forward_proxy::ForwardProxy;
use imagelib_testkit::registry::TestRegistry;
use imagelib_testkit::{TestDb, TestStream};

const ADMIN: &str = "cli-types-admin-token";

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
        // Test registries (and the proxy) listen on loopback.
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

/// Runs the CLI with `stdin`; stdout and stderr, and whether it succeeded.
fn imagelib(server: &Server, args: &[&str], stdin: &str) -> (bool, String, String) {
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
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn registry_types_and_defaults_through_the_cli() {
    let (stream, db) = (TestStream::new(), TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&stream, &db, dir.path()).await;
    let run =
        |args: &[&str], stdin: &str| tokio::task::block_in_place(|| imagelib(&server, args, stdin));

    let (ok, out, err) = run(&["registry", "types"], "");
    assert!(ok, "{err}");
    assert!(out.starts_with("TYPE"), "{out}");
    for needle in [
        "dockerhub",
        "Docker Hub",
        "registry-1.docker.io (default)",
        "Docker Hub Username",
        "Access Token",
        "ghcr.io (default)",
        "Personal Access Token",
        "<name>.azurecr.io",
        "<location>-docker.pkg.dev/<project>/<repo>",
        "aws_ecr",
    ] {
        assert!(out.contains(needle), "{needle}: {out}");
    }
    let (ok, out, _) = run(&["--json", "registry", "types"], "");
    assert!(ok);
    let types: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(types.as_array().unwrap().len(), 7);

    // Docker Hub without --url (or --label): the type's address and name.
    let (ok, out, err) = run(
        &[
            "--json",
            "registry",
            "add",
            "--type",
            "dockerhub",
            "--username",
            "u",
            "--password-stdin",
            "--no-validate",
        ],
        "cli-types-canary\n",
    );
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["url"], "registry-1.docker.io");
    assert_eq!(r["registry_type"], "dockerhub");
    assert_eq!(r["auth_kind"], "basic");
    assert!(!out.contains("cli-types-canary"));
    let (ok, out, err) = run(
        &[
            "--json",
            "registry",
            "add",
            "--type",
            "ghcr",
            "--namespace",
            "acme",
            "--label",
            "Acme",
            "--no-validate",
        ],
        "",
    );
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["url"], "ghcr.io/acme");

    // A type without one address needs --url: the API says which field.
    let (ok, _, err) = run(&["registry", "add", "--type", "harbor", "--label", "h"], "");
    assert!(!ok);
    assert!(err.contains("422") && err.contains("/url"), "{err}");
    // Proxy credentials are refused, and not echoed.
    let (ok, _, err) = run(
        &[
            "registry",
            "add",
            "--url",
            "registry.internal",
            "--proxy-url",
            "http://u:proxy-canary@proxy.internal:3128",
        ],
        "",
    );
    assert!(!ok);
    assert!(err.contains("/proxy_url"), "{err}");
    assert!(!err.contains("proxy-canary"), "{err}");

    // A registry validated through its own proxy; then the proxy removed.
    let registry = TestRegistry::start().await.unwrap();
    let proxy = ForwardProxy::start("127.0.0.2".parse().unwrap())
        .await
        .unwrap();
    let host = format!("localhost:{}", registry.port());
    let (ok, out, err) = run(
        &[
            "--json",
            "registry",
            "add",
            "--label",
            "proxied",
            "--url",
            &host,
            "--insecure",
            "--proxy-url",
            &proxy.url(),
            "--no-proxy",
            ".corp.internal",
        ],
        "",
    );
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["status"], "validated", "{r}");
    assert_eq!(r["proxy_url"], proxy.url());
    assert_eq!(r["no_proxy"], serde_json::json!([".corp.internal"]));
    assert!(
        proxy
            .seen()
            .iter()
            .any(|l| l.starts_with(&format!("GET http://{host}/v2/"))),
        "{:?}",
        proxy.seen()
    );
    let id = r["id"].as_str().unwrap();
    let (ok, out, err) = run(&["registry", "update", id, "--no-proxy-url"], "");
    assert!(ok, "{err}");
    assert!(out.contains("proxy_url"), "{out}");
    let (ok, out, _) = run(&["--json", "registry", "show", id], "");
    assert!(ok);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["proxy_url"], serde_json::Value::Null);

    // A gcr registry at another address names its Artifact Registry repository; other
    // types are refused it; --no-artifact-registry forgets it.
    let images = "projects/my-project/locations/us-central1/repositories/images";
    let (ok, _, err) = run(
        &[
            "registry",
            "add",
            "--url",
            &host,
            "--insecure",
            "--artifact-registry",
            images,
        ],
        "",
    );
    assert!(!ok);
    assert!(
        err.contains("422") && err.contains("/artifact_registry"),
        "{err}"
    );
    let (ok, out, err) = run(
        &[
            "--json",
            "registry",
            "add",
            "--type",
            "gcr",
            "--label",
            "images mirror",
            "--url",
            "mirror.corp.example",
            "--artifact-registry",
            images,
            "--no-validate",
        ],
        "",
    );
    assert!(ok, "{err}");
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["artifact_registry"], images, "{r}");
    let id = r["id"].as_str().unwrap();
    let (ok, out, err) = run(&["registry", "update", id, "--no-artifact-registry"], "");
    assert!(ok, "{err}");
    assert!(out.contains("artifact_registry"), "{out}");
    let (ok, out, _) = run(&["--json", "registry", "show", id], "");
    assert!(ok);
    let r: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(r["artifact_registry"], serde_json::Value::Null);
}
