//! `imagelib deploy` against the tag-mutated gate of a real serving-deployer (in-process,
//! port 0, real NATS and PostgreSQL): the new digest of a re-pushed tag is refused with exit
//! code 7 and the command that approves it; the old content deploys by digest; a running
//! deployment of the old digest shows the flag; an approval lifts the gate.

use std::process::Command;
use std::time::Duration;

use imagelib_events::bus::{EventBus, StreamSettings};
use imagelib_events::event::{
    CatalogApproved, RegistryRegistered, TagDiscovered, TagMoved, TagMutated,
};
use imagelib_events::model::*;
use imagelib_events::{Digest, Envelope, EventPayload, RegistryId};
use imagelib_platform::config::CommonConfig;
use imagelib_testkit::{TestDb, TestStream};

const ADMIN: &str = "cli-mutation-admin-token";
const REPO: &str = "acme/llm";

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

async fn publish(bus: &EventBus, payload: impl Into<EventPayload>) {
    bus.publish(&Envelope::new("test", payload)).await.unwrap();
}

fn details() -> ImageDetails {
    ImageDetails {
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
    }
}

fn digest(n: u8) -> Digest {
    format!("sha256:{}", format!("{n:02x}").repeat(32))
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_re_pushed_tag_exits_7_until_approved_and_the_running_deployment_is_flagged() {
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
    let (old, new) = (digest(1), digest(2));
    publish(
        &bus,
        TagDiscovered {
            registry_id: reg,
            repository: REPO.parse().unwrap(),
            tag: "1.0".parse().unwrap(),
            digest: old.clone(),
            details: details(),
        },
    )
    .await;
    let image = format!("{reg}/{REPO}:1.0");
    let (code, out, err) = until(
        &server,
        &["deploy", "create", &image, "--name", "llm", "-o", "json"],
        |c, _, _| c == 0,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    let running: serde_json::Value = serde_json::from_str(&out).unwrap();
    let id = running["id"].as_str().unwrap().to_owned();

    // Re-pushed: the move and the mutation, as the scanner emits them.
    publish(
        &bus,
        TagMoved {
            registry_id: reg,
            repository: REPO.parse().unwrap(),
            tag: "1.0".parse().unwrap(),
            old_digest: old.clone(),
            new_digest: new.clone(),
            details: details(),
        },
    )
    .await;
    publish(
        &bus,
        TagMutated {
            registry_id: reg,
            repository: REPO.parse().unwrap(),
            tag: "1.0".parse().unwrap(),
            old_digest: old.clone(),
            new_digest: new.clone(),
            found_by: MutationFoundBy::Webhook,
            seen_at: None,
        },
    )
    .await;

    let (code, _, err) = until(
        &server,
        &["deploy", "create", &image, "--name", "llm-new"],
        |_, _, e| e.contains("[tag-mutated]"),
    )
    .await;
    assert_eq!(code, 7, "{err}");
    assert!(
        err.contains(&format!("imagelib images approve {image} --digest {new}")),
        "{err}"
    );
    assert!(err.contains(&format!("{image}@{old}")), "{err}");
    assert!(err.contains("hint: the tag was re-pushed"), "{err}");

    // The running deployment: untouched, flagged.
    let (code, out, err) = imagelib(&server, &["deploy", "show", &id]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "flag             tag_mutated: tag 1.0 was re-pushed from the digest this deployment runs ({old}) to {new} (found by webhook"
        )),
        "{out}"
    );
    assert!(out.contains("state            applied"), "{out}");
    let (code, out, _) = imagelib(&server, &["deploy", "ls"]);
    assert_eq!(code, 0);
    let row = out
        .lines()
        .find(|l| l.contains("models/llm ") || l.contains("default/llm "))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(row.trim_end().ends_with("tag_mutated"), "{out}");

    // The old content, pinned by digest, deploys.
    let pinned = format!("{image}@{old}");
    let (code, out, err) = imagelib(
        &server,
        &[
            "deploy", "create", &pinned, "--name", "llm-old", "-o", "json",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(old.as_str()), "{out}");

    // Approved by a curator: the gate lifts.
    publish(
        &bus,
        CatalogApproved {
            target: CatalogTarget {
                registry_id: reg,
                repository: REPO.parse().unwrap(),
                tag: Some("1.0".parse().unwrap()),
            },
            digest: Some(new.clone()),
            reason: "re-push reviewed".into(),
        },
    )
    .await;
    let (code, out, err) = until(
        &server,
        &[
            "deploy", "create", &image, "--name", "llm-new", "-o", "json",
        ],
        |c, _, _| c == 0,
    )
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(new.as_str()), "{out}");
}
