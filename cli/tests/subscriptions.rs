//! `imagelib subscriptions …` against a real `imagelib serve` (in-process, port 0), NATS,
//! PostgreSQL and a real HTTP receiver (a plain TCP server in the test speaking HTTP/1.1):
//! create prints the secret once, ls/show never do, a delivery arrives, replay delivers
//! it again, dead-letters, rm, and the exit codes of refusals.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use imagelib::serve::Configs;
use imagelib_events::bus::{EventBus, StreamSettings};
use imagelib_events::event::SyncRequested;
use imagelib_events::model::SyncReason;
use imagelib_events::{Envelope, RegistryId};
use imagelib_platform::config::CommonConfig;
use imagelib_testkit::{TestDb, TestStream};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ADMIN: &str = "cli-subscriptions-admin-token";

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
    let mut configs = Configs::from_common(common);
    configs.registry_registry.delivery.subscriptions_allow_http = true;
    let app = imagelib::serve::build(configs).await.unwrap();
    let url = format!("http://{}", app.local_addr());
    let (tx, rx) = tokio::sync::oneshot::channel();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = rx.await;
    }));
    Server { url, _stop: tx }
}

/// A minimal HTTP/1.1 receiver: records each request's `webhook-id` and answers 204.
async fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let ids: Arc<Mutex<Vec<String>>> = Arc::default();
    let seen = ids.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then Content-Length bytes of body.
                let (head_end, length) = loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_ascii_lowercase();
                        let length = head
                            .lines()
                            .find_map(|l| l.strip_prefix("content-length:"))
                            .and_then(|v| v.trim().parse::<usize>().ok())
                            .unwrap_or(0);
                        break (i + 4, length);
                    }
                };
                while buf.len() < head_end + length {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
                if let Some(id) = head.lines().find_map(|l| {
                    l.to_ascii_lowercase()
                        .starts_with("webhook-id:")
                        .then(|| l[11..].trim().to_owned())
                }) {
                    seen.lock().unwrap().push(id);
                }
                let _ = sock
                    .write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (url, ids)
}

/// Runs the CLI; returns (exit code, stdout, stderr).
fn imagelib(server: &Server, args: &[&str], stdin: &str) -> (i32, String, String) {
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
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn ok(server: &Server, args: &[&str]) -> String {
    let (code, out, err) = imagelib(server, args, "");
    assert_eq!(code, 0, "{args:?}\nstdout: {out}\nstderr: {err}");
    out
}

async fn wait_for(ids: &Arc<Mutex<Vec<String>>>, n: usize) -> Vec<String> {
    for _ in 0..300 {
        if ids.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    ids.lock().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn subscriptions_through_the_cli() {
    let (stream, db) = (TestStream::new(), TestDb::new());
    let dir = tempfile::tempdir().unwrap();
    let server = serve(&stream, &db, dir.path()).await;
    let (url, ids) = receiver().await;

    let out = ok(
        &server,
        &[
            "subscriptions",
            "create",
            "--url",
            &url,
            "--type",
            "*.sync.requested.v1",
        ],
    );
    assert!(out.contains("secret:          whsec_"), "{out}");
    assert!(out.contains("never shown again"), "{out}");
    let id = out
        .lines()
        .find_map(|l| l.strip_prefix("id:"))
        .unwrap()
        .trim()
        .to_owned();
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("secret:"))
        .unwrap()
        .trim()
        .to_owned();

    let ls = ok(&server, &["subscriptions", "ls"]);
    assert!(ls.contains(&id) && ls.contains(&url), "{ls}");
    let shown: Value =
        serde_json::from_str(&ok(&server, &["-o", "json", "subscriptions", "show", &id])).unwrap();
    assert_eq!(shown["id"], id.as_str());
    assert!(!ls.contains(&secret) && !shown.to_string().contains(&secret));

    // An event arrives; a replay of the last hour brings it again.
    let bus = EventBus::from_client(
        stream.client().await.unwrap(),
        StreamSettings::new(&stream.name, &stream.prefix),
    );
    let event = Envelope::new(
        "test",
        SyncRequested {
            registry_id: RegistryId::new(),
            repository: None,
            reason: SyncReason::Manual,
        },
    );
    bus.publish(&event).await.unwrap();
    assert_eq!(wait_for(&ids, 1).await, vec![event.id.to_string()]);
    let out = ok(&server, &["subscriptions", "replay", &id, "--from", "1h"]);
    assert!(out.starts_with("replay requested"), "{out}");
    assert_eq!(wait_for(&ids, 2).await, vec![event.id.to_string(); 2]);
    let out = ok(&server, &["subscriptions", "dead-letters", &id]);
    assert_eq!(out.trim(), "no dead letters");

    // A given secret (stdin) is not printed; a bad pattern is refused (exit 4).
    let (code, out, err) = imagelib(
        &server,
        &[
            "subscriptions",
            "create",
            "--url",
            &url,
            "--type",
            "*",
            "--secret-stdin",
        ],
        "a-given-secret-of-more-than-32-characters\n",
    );
    assert_eq!(code, 0, "{out}{err}");
    assert!(!out.contains("secret:"), "{out}");
    let (code, _, err) = imagelib(
        &server,
        &[
            "subscriptions",
            "create",
            "--url",
            &url,
            "--type",
            "io.imagelib.nope.*",
        ],
        "",
    );
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("/types/0"), "{err}");
    let (code, _, err) = imagelib(
        &server,
        &["subscriptions", "replay", &id, "--from", "soon"],
        "",
    );
    assert_eq!(code, 2, "{err}");

    let out = ok(&server, &["subscriptions", "rm", &id]);
    assert!(out.contains("removed"), "{out}");
    let (code, _, err) = imagelib(&server, &["subscriptions", "show", &id], "");
    assert_eq!(code, 3, "{err}");
}
