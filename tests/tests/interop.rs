//! A CloudEvents client in another language (the Python SDK with nats-py) reads what
//! imagelib publishes from the stream and sees the same events.

use std::path::{Path, PathBuf};
use std::process::Command;

use imagelib_events::bus::{EventBus, StreamSettings};
use imagelib_events::event::{RegistryRegistered, TagDiscovered};
use imagelib_events::model::{AuthKind, ImageDetails, ImageKind, ModelType, RegistryType};
use imagelib_events::{Envelope, RegistryId, TraceParent};

/// A virtualenv with the pinned requirements, made once per checkout under `target/`.
fn python() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = root.join("../target/interop-venv");
    let py = venv.join("bin/python");
    let reqs = root.join("interop/requirements.txt");
    let stamp = venv.join("requirements.txt");
    let current = std::fs::read_to_string(&reqs).unwrap();
    if std::fs::read_to_string(&stamp).ok().as_deref() != Some(current.as_str()) {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .expect("python3 is needed for the interoperability test");
        assert!(status.success());
        let status = Command::new(&py)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&reqs)
            .status()
            .unwrap();
        assert!(status.success(), "pip install failed");
        std::fs::write(&stamp, current).unwrap();
    }
    py
}

#[tokio::test]
async fn the_python_cloudevents_sdk_reads_our_events() {
    let ts = imagelib_testkit::TestStream::new();
    let bus = EventBus::connect(
        &imagelib_events::connect::NatsConnect::new(&ts.nats_url),
        "interop",
        StreamSettings::new(&ts.name, &ts.prefix),
    )
    .await
    .unwrap();
    bus.ensure_stream().await.unwrap();
    let registry_id = RegistryId::new();
    let tp = TraceParent::new_root();
    let events = vec![
        Envelope::new(
            "registry-registry",
            RegistryRegistered {
                registry_id,
                label: "Acme Harbor — ünïcode".into(),
                url: "harbor.acme.internal/ai".into(),
                registry_type: RegistryType::Harbor,
                insecure: false,
                auth_kind: AuthKind::None,
                credential: None,
                visibility: vec!["ml-platform".into()],
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
        .with_traceparent(Some(tp))
        .with_actor("admin"),
        Envelope::new(
            "sync-scanner",
            TagDiscovered {
                registry_id,
                repository: "nvidia/nim/llama-3.1-8b-instruct".parse().unwrap(),
                tag: "1.0.3".parse().unwrap(),
                digest: format!("sha256:{}", "ab".repeat(32)).parse().unwrap(),
                details: ImageDetails {
                    media_type: "application/vnd.oci.image.index.v1+json".into(),
                    artifact_type: None,
                    platforms: vec![],
                    size: 1234,
                    created: None,
                    labels: Default::default(),
                    annotations: Default::default(),
                    kind: ImageKind::Model,
                    model_type: Some(ModelType::TextCompletion),
                    extensions: vec![],
                    referrers: vec![],
                },
            },
        ),
    ];
    for e in &events {
        bus.publish(e).await.unwrap();
    }
    let py = python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("interop/read_stream.py");
    let out = tokio::task::spawn_blocking({
        let (url, name, filter) = (
            ts.nats_url.clone(),
            ts.name.clone(),
            format!("{}.>", ts.prefix),
        );
        move || {
            Command::new(py)
                .arg(script)
                .args([url, name, filter, "2".into()])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    for (line, env) in lines.iter().zip(&events) {
        assert_eq!(line["specversion"], "1.0");
        assert_eq!(line["id"], env.id.to_string());
        assert_eq!(line["msg_id"], env.id.to_string());
        assert_eq!(line["type"], env.event_type());
        assert_eq!(line["subject"], env.payload.subject());
        assert_eq!(line["data"], env.payload.to_json());
    }
    assert_eq!(lines[0]["source"], "/imagelib/registry-registry");
    assert_eq!(lines[0]["traceparent"], tp.to_string());
    assert_eq!(lines[0]["data"]["label"], "Acme Harbor — ünïcode");
    assert_eq!(lines[1]["data"]["model_type"], "text-completion");
}
