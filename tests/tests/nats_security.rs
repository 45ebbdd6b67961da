//! The closed event log: nats-server processes of the tests' own, configured with exactly
//! what `imagelib nats config` generates, refuse anonymous and wrong credentials, keep each
//! service to its own subjects, let the external role request syncs and nothing else, and
//! never purge or delete the stream; TLS with a private CA; `imagelib serve` runs as the
//! all-in-one user. The stream's own config (deny purge/delete, discard new, byte limit)
//! is checked on the shared dev server, where the user may do anything.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::{ConnectErrorKind, HeaderMap};
use bytes::Bytes;
use imagelib::nats_cmd::{AuthKind, ConfigArgs, Generated, generate};
use imagelib_events::bus::{BusError, EventBus, StreamSettings};
use imagelib_events::connect::{ConnectError, NatsConnect};
use imagelib_testkit::nats::NatsServer;
use imagelib_testkit::unique_id;

/// A prefix and stream of this test's own, the generated config for them, and a server
/// running it.
struct Secured {
    server: NatsServer,
    generated: Generated,
    settings: StreamSettings,
}

impl Secured {
    async fn start(auth: AuthKind, tls: bool) -> Secured {
        let id = unique_id();
        let settings = StreamSettings {
            max_bytes: 64 * 1024 * 1024,
            ..StreamSettings::new(format!("S_{id}"), format!("s{id}"))
        };
        let generated = generate(&ConfigArgs {
            prefix: settings.subject_prefix.clone(),
            stream: settings.name.clone(),
            auth,
            ..Default::default()
        })
        .unwrap();
        let server = if tls {
            NatsServer::start_tls(&generated.config).await.unwrap()
        } else {
            NatsServer::start(&generated.config).await.unwrap()
        };
        Secured {
            server,
            generated,
            settings,
        }
    }

    /// How `user` connects: its credentials file (and the CA of a TLS server).
    fn connect_as(&self, user: &str) -> NatsConnect {
        let creds = self
            .server
            .write_file(
                &format!("{user}.creds"),
                self.generated.creds(user).unwrap(),
            )
            .unwrap();
        let mut c = NatsConnect::new(&self.server.url).creds_file(creds);
        if let Some(ca) = self.server.ca_file() {
            c = c.ca_file(ca);
        }
        c
    }

    async fn bus(&self, user: &str) -> EventBus {
        EventBus::connect(&self.connect_as(user), user, self.settings.clone())
            .await
            .unwrap_or_else(|e| panic!("{user} connects: {e}"))
    }

    fn subject(&self, aggregate: &str, event: &str) -> String {
        format!(
            "{}.{aggregate}.{}.{event}",
            self.settings.subject_prefix,
            uuid::Uuid::new_v4()
        )
    }
}

/// Publish and wait for the stream's ack, at most 2 s (a publish the server refuses for
/// permissions gets no ack at all).
async fn try_publish(bus: &EventBus, subject: &str) -> Result<u64, String> {
    let mut js = jetstream::new(bus.client().clone());
    js.set_timeout(Duration::from_secs(2));
    let ack = js
        .publish(subject.to_owned(), Bytes::from_static(b"{}"))
        .await
        .map_err(|e| e.to_string())?;
    ack.await.map(|a| a.sequence).map_err(|e| e.to_string())
}

async fn in_stream(bus: &EventBus, subject: &str) -> bool {
    bus.last_sequence_of(subject).await.unwrap().is_some()
}

#[tokio::test]
async fn anonymous_and_wrong_credentials_are_refused() {
    let s = Secured::start(AuthKind::Password, false).await;
    let anonymous = NatsConnect::new(&s.server.url).connect("anon").await;
    let err = anonymous.expect_err("an anonymous connection is refused");
    assert!(err.is_auth(), "{err}");
    assert!(err.to_string().contains("IMAGELIB_NATS_CREDS"), "{err}");

    // A known user with a wrong password, from a file and in the URL.
    let wrong = s
        .server
        .write_file("wrong.creds", "sync-scanner:not-the-password\n")
        .unwrap();
    let err = NatsConnect::new(&s.server.url)
        .creds_file(&wrong)
        .connect("wrong")
        .await
        .expect_err("a wrong password is refused");
    assert!(err.is_auth(), "{err}");
    let url = format!(
        "nats://sync-scanner:guessed-pa55@127.0.0.1:{}",
        s.server.port
    );
    let err = EventBus::connect(&NatsConnect::new(&url), "t", s.settings.clone())
        .await
        .expect_err("a wrong password in the URL is refused");
    let message = err.to_string();
    assert!(
        matches!(
            err,
            BusError::Connect(ConnectError::Refused {
                kind: ConnectErrorKind::AuthorizationViolation,
                ..
            })
        ),
        "{message}"
    );
    assert!(!message.contains("guessed-pa55"), "{message}");
    assert!(message.contains("sync-scanner:***@"), "{message}");

    // The right password in the URL works.
    let good = s.generated.creds("reader").unwrap().trim().to_owned();
    let url = format!("nats://{good}@127.0.0.1:{}", s.server.port);
    NatsConnect::new(&url).connect("url").await.unwrap();
}

#[tokio::test]
async fn each_service_publishes_its_own_events_and_no_others() {
    let s = Secured::start(AuthKind::Password, false).await;
    let rr = s.bus("registry-registry").await;
    rr.ensure_stream().await.unwrap();
    let owned = [
        ("registry-registry", "registry", "registered"),
        ("registry-registry", "rule", "set"),
        ("registry-registry", "sync", "requested"),
        ("sync-scanner", "sync", "completed"),
        ("sync-scanner", "image", "tag_discovered"),
        ("catalog-projector", "catalog", "approved"),
        ("serving-deployer", "deployment", "requested"),
    ];
    for (user, aggregate, event) in owned {
        let bus = s.bus(user).await;
        let subject = s.subject(aggregate, event);
        try_publish(&bus, &subject)
            .await
            .unwrap_or_else(|e| panic!("{user} publishes {subject}: {e}"));
        assert!(in_stream(&rr, &subject).await);
    }
    let forged = [
        ("sync-scanner", "registry", "updated"),
        ("sync-scanner", "catalog", "approved"),
        ("sync-scanner", "deployment", "requested"),
        ("catalog-projector", "image", "tag_discovered"),
        ("serving-deployer", "catalog", "approved"),
        ("registry-registry", "sync", "completed"),
        ("reader", "registry", "updated"),
    ];
    for (user, aggregate, event) in forged {
        let bus = s.bus(user).await;
        let subject = s.subject(aggregate, event);
        assert!(
            try_publish(&bus, &subject).await.is_err(),
            "{user} must not publish {subject}"
        );
        assert!(
            !in_stream(&rr, &subject).await,
            "{subject} is not in the stream"
        );
    }
    assert!(
        s.server.log().contains("Publish Violation"),
        "the server logs the refusals"
    );
}

#[tokio::test]
async fn the_external_publisher_may_only_request_syncs() {
    let s = Secured::start(AuthKind::Nkey, false).await;
    let owner = s.bus("imagelib").await;
    owner.ensure_stream().await.unwrap();
    let external = s.bus("external-publisher").await;
    let request = s.subject("sync", "requested");
    try_publish(&external, &request).await.unwrap();
    assert!(in_stream(&owner, &request).await);
    // The same through `EventBus::publish_raw`, as `imagelib events publish` does.
    let again = s.subject("sync", "requested");
    external
        .publish_raw(&again, HeaderMap::new(), Bytes::from_static(b"{}"), "m-1")
        .await
        .unwrap();
    for (aggregate, event) in [
        ("sync", "started"),
        ("sync", "completed"),
        ("registry", "updated"),
        ("catalog", "approved"),
        ("deployment", "requested"),
        ("dlq", "catalog-projector"),
    ] {
        let subject = s.subject(aggregate, event);
        assert!(try_publish(&external, &subject).await.is_err(), "{subject}");
        assert!(!in_stream(&owner, &subject).await, "{subject}");
    }
    // No stream administration either.
    let mut js = jetstream::new(external.client().clone());
    js.set_timeout(Duration::from_secs(2));
    assert!(
        js.create_stream(jetstream::stream::Config {
            name: format!("{}_X", s.settings.name),
            subjects: vec![format!("{}_x.>", s.settings.subject_prefix)],
            ..Default::default()
        })
        .await
        .is_err()
    );
}

#[tokio::test]
async fn no_user_may_purge_or_delete_the_stream() {
    let s = Secured::start(AuthKind::Password, false).await;
    let owner = s.bus("imagelib").await;
    owner.ensure_stream().await.unwrap();
    let subject = s.subject("registry", "registered");
    let seq = try_publish(&owner, &subject).await.unwrap();
    for user in [
        "imagelib",
        "registry-registry",
        "sync-scanner",
        "catalog-projector",
        "serving-deployer",
        "reader",
        "external-publisher",
    ] {
        let bus = s.bus(user).await;
        let mut js = jetstream::new(bus.client().clone());
        js.set_timeout(Duration::from_secs(1));
        let stream = js.get_stream(&s.settings.name).await;
        if let Ok(stream) = stream {
            assert!(stream.purge().await.is_err(), "{user} purges");
            assert!(
                stream.delete_message(seq).await.is_err(),
                "{user} deletes a message"
            );
        }
        assert!(
            js.delete_stream(&s.settings.name).await.is_err(),
            "{user} deletes the stream"
        );
        let keys_stream = format!("KV_{}_KEYS", s.settings.name);
        assert!(
            js.delete_stream(&keys_stream).await.is_err(),
            "{user} deletes the key bucket"
        );
    }
    assert!(in_stream(&owner, &subject).await, "the event survived");
    assert_eq!(owner.last_sequence().await.unwrap(), seq);
}

/// Only the stream's owner reconfigures it: another service starts on the stream as it
/// is, and cannot shorten its limits (which would expire history).
#[tokio::test]
async fn only_the_owner_reconfigures_the_stream() {
    let s = Secured::start(AuthKind::Password, false).await;
    let owner = s.bus("catalog-projector").await;
    owner.ensure_stream().await.unwrap();
    let with_limit = |user: &'static str, max_bytes: i64| {
        let settings = StreamSettings {
            max_bytes,
            ..s.settings.clone()
        };
        let c = s.connect_as(user);
        async move { EventBus::connect(&c, user, settings).await.unwrap() }
    };
    let scanner = with_limit("sync-scanner", 32 * 1024 * 1024).await;
    let info = scanner.ensure_stream().await.unwrap();
    assert_eq!(info.config.max_bytes, s.settings.max_bytes, "left as it is");
    let mut js = jetstream::new(scanner.client().clone());
    js.set_timeout(Duration::from_secs(1));
    let mut shortened = info.config.clone();
    shortened.max_age = Duration::from_secs(1);
    assert!(js.update_stream(shortened).await.is_err());
    let owner = with_limit("catalog-projector", 32 * 1024 * 1024).await;
    let info = owner.ensure_stream().await.unwrap();
    assert_eq!(
        info.config.max_bytes,
        32 * 1024 * 1024,
        "the owner applies it"
    );
    assert_eq!(info.config.max_age, Duration::ZERO);
}

/// What NATS itself refuses once the stream is created by `ensure_stream`, for a user
/// that may do anything (the shared dev server has no authentication).
#[tokio::test]
async fn the_stream_denies_purge_and_delete_and_refuses_appends_when_full() {
    let ts = imagelib_testkit::TestStream::new();
    let settings = StreamSettings {
        max_bytes: 1024 * 1024,
        ..StreamSettings::new(&ts.name, &ts.prefix)
    };
    let bus = EventBus::from_client(ts.client().await.unwrap(), settings);
    let info = bus.ensure_stream().await.unwrap();
    assert!(info.config.deny_purge && info.config.deny_delete);
    assert_eq!(info.config.discard, jetstream::stream::DiscardPolicy::New);
    assert_eq!(info.config.max_bytes, 1024 * 1024);
    let subject = format!("{}.registry.{}.registered", ts.prefix, uuid::Uuid::new_v4());
    let first = try_publish(&bus, &subject).await.unwrap();
    let js = bus.jetstream();
    let stream = js.get_stream(&ts.name).await.unwrap();
    let purge = stream.purge().await;
    assert!(
        purge.is_err(),
        "purge refused by the stream config: {purge:?}"
    );
    assert!(stream.delete_message(first).await.is_err());
    // Lifting the flags is refused by the server.
    let mut lifted = info.config.clone();
    lifted.deny_purge = false;
    lifted.deny_delete = false;
    assert!(js.update_stream(lifted).await.is_err());
    // Full: the append is refused and nothing old is dropped.
    let big = Bytes::from(vec![b'x'; 200 * 1024]);
    let mut refused = false;
    for _ in 0..10 {
        let r = js
            .publish(subject.clone(), big.clone())
            .await
            .unwrap()
            .await;
        if r.is_err() {
            refused = true;
            break;
        }
    }
    assert!(refused, "a full stream refuses appends");
    let mut stream = js.get_stream(&ts.name).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.first_sequence, first);
}

/// A stream created by an older version (no deny flags, discard old, no byte limit) is
/// brought in line by `ensure_stream`.
#[tokio::test]
async fn ensure_stream_hardens_an_existing_stream() {
    let ts = imagelib_testkit::TestStream::new();
    let client = ts.client().await.unwrap();
    let js = jetstream::new(client.clone());
    js.create_stream(jetstream::stream::Config {
        name: ts.name.clone(),
        subjects: vec![format!("{}.>", ts.prefix)],
        storage: jetstream::stream::StorageType::File,
        duplicate_window: Duration::from_secs(120),
        allow_direct: true,
        ..Default::default()
    })
    .await
    .unwrap();
    let settings = StreamSettings {
        max_bytes: 8 * 1024 * 1024,
        ..StreamSettings::new(&ts.name, &ts.prefix)
    };
    let info = EventBus::from_client(client, settings)
        .ensure_stream()
        .await
        .unwrap();
    assert!(info.config.deny_purge);
    assert!(info.config.deny_delete);
    assert_eq!(info.config.discard, jetstream::stream::DiscardPolicy::New);
    assert_eq!(info.config.max_bytes, 8 * 1024 * 1024);
}

#[tokio::test]
async fn tls_with_the_private_ca() {
    let s = Secured::start(AuthKind::Password, true).await;
    let bus = s.bus("imagelib").await;
    bus.ensure_stream().await.unwrap();
    try_publish(&bus, &s.subject("registry", "registered"))
        .await
        .unwrap();
    // Without the CA the server's certificate is not trusted.
    let mut no_ca = s.connect_as("imagelib");
    no_ca.ca_file = None;
    let url = format!("tls://127.0.0.1:{}", s.server.port);
    no_ca.url = url;
    let err = tokio::time::timeout(Duration::from_secs(20), no_ca.connect("no-ca"))
        .await
        .expect("refused, not hanging")
        .expect_err("an unknown CA is refused");
    assert!(err.to_string().contains("TLS"), "{err}");
    // A CA file that holds no certificate is refused before connecting.
    let bogus = s
        .server
        .write_file("bogus.pem", "not a certificate")
        .unwrap();
    let err = s
        .connect_as("imagelib")
        .ca_file(bogus)
        .connect("bogus")
        .await
        .expect_err("not a CA");
    assert!(matches!(err, ConnectError::Ca { .. }), "{err}");
}

#[tokio::test]
async fn imagelib_serve_runs_as_the_all_in_one_user() {
    let s = Secured::start(AuthKind::Nkey, false).await;
    let creds = s
        .server
        .write_file("imagelib.creds", s.generated.creds("imagelib").unwrap())
        .unwrap();
    let url = s.server.url.clone();
    let (stream, prefix) = (s.settings.name.clone(), s.settings.subject_prefix.clone());
    let server = imagelib_e2e::TestServer::start_with(move |c| {
        c.nats_url = url;
        c.nats_creds = Some(creds);
        c.stream = stream;
        c.subject_prefix = prefix;
    })
    .await
    .unwrap();
    server.wait_ready().await.unwrap();
    let res = server
        .http
        .post(server.url("/v1/registries"))
        .bearer_auth("test-admin-token")
        .json(&serde_json::json!({
            "label": "secured", "url": "registry.invalid", "registry_type": "generic",
            "validate": false
        }))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap();
    let reader = s.bus("reader").await;
    let subject = format!("{}.registry.{id}.registered", s.settings.subject_prefix);
    assert!(in_stream(&reader, &subject).await);
    // The reader replays the stream as `imagelib events tail` does.
    let mut replay = reader.replay(1, None, None).await.unwrap();
    let mut types = Vec::new();
    while let Some(item) = replay.next().await {
        let item = item.unwrap();
        types.push(item.event.unwrap().event_type().to_owned());
    }
    assert!(
        types.contains(&"io.imagelib.registry.registered.v1".to_owned()),
        "{types:?}"
    );
    server.stop().await.unwrap();
}

/// The shipped server configuration, with what `imagelib nats config` generates for the
/// compose cluster beside it, is accepted by nats-server; compose and Kubernetes hand each
/// service its own credentials file and keep NATS closed.
#[test]
fn the_shipped_server_configuration_is_valid_and_wired() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let dir = tempfile_dir();
    let generated = generate(&ConfigArgs {
        cluster_routes: vec![
            "nats-1:6222".into(),
            "nats-2:6222".into(),
            "nats-3:6222".into(),
        ],
        ..Default::default()
    })
    .unwrap();
    std::fs::write(dir.join("auth.conf"), &generated.config).unwrap();
    std::fs::write(
        dir.join("cluster.conf"),
        generated.cluster.as_ref().unwrap(),
    )
    .unwrap();
    std::fs::copy(
        root.join("deploy/nats/nats-server.conf"),
        dir.join("nats-server.conf"),
    )
    .unwrap();
    imagelib_testkit::nats::check_config(&dir.join("nats-server.conf")).unwrap();
    // Without the generated users the server refuses to start rather than run open.
    std::fs::remove_file(dir.join("auth.conf")).unwrap();
    assert!(imagelib_testkit::nats::check_config(&dir.join("nats-server.conf")).is_err());
    let _ = std::fs::remove_dir_all(&dir);

    let compose: serde_norway::Value =
        serde_norway::from_str(&std::fs::read_to_string(root.join("docker-compose.yml")).unwrap())
            .unwrap();
    for service in [
        "registry-registry",
        "sync-scanner",
        "catalog-projector",
        "serving-deployer",
    ] {
        let s = &compose["services"][service];
        assert_eq!(
            s["environment"]["IMAGELIB_NATS_CREDS"].as_str(),
            Some("/run/secrets/nats.creds"),
            "{service}"
        );
        let secret = format!("nats_{}", service.replace('-', "_"));
        let mounted = s["secrets"].as_sequence().unwrap().iter().any(|m| {
            m["source"].as_str() == Some(&secret) && m["target"].as_str() == Some("nats.creds")
        });
        assert!(mounted, "{service} mounts its own credentials");
        assert_eq!(
            compose["secrets"][&secret]["file"].as_str(),
            Some(format!("./deploy/nats/creds/{service}.creds").as_str())
        );
    }
    for node in ["nats-1", "nats-2", "nats-3"] {
        let command = compose["services"][node]["command"].as_sequence().unwrap();
        assert_eq!(
            command[0].as_str(),
            Some("-c"),
            "{node} runs the shipped config"
        );
        assert_eq!(command[1].as_str(), Some("/etc/nats/nats-server.conf"));
    }
    let k8s = std::fs::read_to_string(root.join("deploy/kubernetes/nats.yaml")).unwrap();
    assert!(k8s.contains("imagelib-nats-server") && k8s.contains("/etc/nats/nats-server.conf"));
    let config_map: serde_norway::Value =
        serde_norway::from_str(k8s.split("\n---\n").next().unwrap()).unwrap();
    assert_eq!(
        config_map["data"]["nats-server.conf"]
            .as_str()
            .map(str::trim_end),
        Some(
            std::fs::read_to_string(root.join("deploy/nats/nats-server.conf"))
                .unwrap()
                .trim_end()
        ),
        "the Kubernetes ConfigMap carries deploy/nats/nats-server.conf"
    );
    for service in [
        "registry-registry",
        "sync-scanner",
        "catalog-projector",
        "serving-deployer",
    ] {
        let m = std::fs::read_to_string(root.join(format!("deploy/kubernetes/{service}.yaml")))
            .unwrap();
        assert!(m.contains("IMAGELIB_NATS_CREDS"), "{service}");
        assert!(m.contains(&format!("key: {service}.creds")), "{service}");
    }
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("imagelib-nats-conf-{}", unique_id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The four services as separate processes would run them (compose, Kubernetes), each as
/// its own generated user: they start, project, register with sealed credentials, queue and
/// run a scan (job queue, lease, data key), keep the integrity sweep's positions, project
/// into the catalog and shred a removed registry's key, and the server logs no permission
/// violation on the way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_service_runs_as_its_own_user() {
    let s = Secured::start(AuthKind::Password, false).await;
    let db = imagelib_testkit::TestDb::new();
    let state = tempfile_dir();
    let common = |user: &str| imagelib_platform::config::CommonConfig {
        nats_url: s.server.url.clone(),
        nats_creds: Some(
            s.server
                .write_file(&format!("{user}.creds"), s.generated.creds(user).unwrap())
                .unwrap(),
        ),
        database_url: db.url.clone(),
        stream: s.settings.name.clone(),
        subject_prefix: s.settings.subject_prefix.clone(),
        stream_max_bytes: s.settings.max_bytes,
        http_addr: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0))),
        master_key_file: state.join("master.key"),
        gitops_dir: state.join("gitops"),
        admin_token: Some("admin".into()),
        allow_networks: Some(imagelib_testkit::LOOPBACK_NETWORKS.into()),
        ..Default::default()
    };
    let mut stops = Vec::new();
    let mut spawn =
        |addr: std::net::SocketAddr,
         run: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>| {
            stops.push(tokio::spawn(run));
            addr
        };
    let rr = registry_registry::startup::Application::build(registry_registry::config::Config {
        common: common("registry-registry"),
        ..Default::default()
    })
    .await
    .expect("registry-registry starts as its user");
    let rr_addr = spawn(
        rr.local_addr(),
        Box::pin(async move {
            let _ = rr.run_until_stopped(std::future::pending()).await;
        }),
    );
    let ss = sync_scanner::startup::Application::build(sync_scanner::config::Config {
        common: common("sync-scanner"),
        ..Default::default()
    })
    .await
    .expect("sync-scanner starts as its user");
    let ss_addr = spawn(
        ss.local_addr(),
        Box::pin(async move {
            let _ = ss.run_until_stopped(std::future::pending()).await;
        }),
    );
    let cp = catalog_projector::startup::Application::build(catalog_projector::config::Config {
        common: common("catalog-projector"),
        ..Default::default()
    })
    .await
    .expect("catalog-projector starts as its user");
    let cp_addr = spawn(
        cp.local_addr(),
        Box::pin(async move {
            let _ = cp.run_until_stopped(std::future::pending()).await;
        }),
    );
    let sd = serving_deployer::startup::Application::build(serving_deployer::config::Config {
        common: common("serving-deployer"),
        ..Default::default()
    })
    .await
    .expect("serving-deployer starts as its user");
    let sd_addr = spawn(
        sd.local_addr(),
        Box::pin(async move {
            let _ = sd.run_until_stopped(std::future::pending()).await;
        }),
    );
    let http = reqwest::Client::new();
    for addr in [rr_addr, ss_addr, cp_addr, sd_addr] {
        imagelib_e2e::wait_ready(&http, addr).await.unwrap();
    }

    // Register with credentials (sealed under a data key in the key bucket), then sync.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let res = http
        .post(format!("http://{rr_addr}/v1/registries"))
        .bearer_auth("admin")
        .json(&serde_json::json!({
            "label": "secured", "url": format!("127.0.0.1:{port}"), "registry_type": "generic",
            "insecure": true, "validate": false,
            "credentials": {"kind": "basic", "username": "u", "password": "canary-pa55"}
        }))
        .send()
        .await
        .unwrap();
    let status = res.status();
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    let id = body["id"].as_str().unwrap().to_owned();
    let res = http
        .post(format!("http://{rr_addr}/v1/registries/{id}/sync"))
        .bearer_auth("admin")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());

    // The scanner ran it (the registry is unreachable: sync.failed) and the catalog
    // projected the registry.
    let reader = s.bus("reader").await;
    let p = &s.settings.subject_prefix;
    let mut scanned = false;
    let mut projected = false;
    for _ in 0..300 {
        if !scanned {
            for outcome in ["failed", "completed"] {
                let subject = format!("{p}.sync.{id}.{outcome}");
                scanned |= reader.last_sequence_of(&subject).await.unwrap().is_some();
            }
        }
        if !projected {
            projected = http
                .get(format!("http://{cp_addr}/v1/registries/{id}"))
                .bearer_auth("admin")
                .send()
                .await
                .unwrap()
                .status()
                .is_success();
        }
        if scanned && projected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(scanned, "sync-scanner scanned as its user");
    assert!(projected, "catalog-projector projected as its user");
    // The integrity sweep keeps its positions in a bucket of its own, created as the
    // scanner's user.
    let scanner = s.bus("sync-scanner").await;
    let bucket = format!("KV_{}_INTEGRITY", s.settings.name);
    let mut swept = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        let info = tokio::time::timeout(
            Duration::from_secs(1),
            scanner.jetstream().get_stream(&bucket),
        );
        if matches!(info.await, Ok(Ok(_))) {
            swept = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(swept, "the scanner created {bucket} as its user");

    // Removal shreds the data key (message delete and purge in the key bucket only).
    let res = http
        .delete(format!("http://{rr_addr}/v1/registries/{id}"))
        .bearer_auth("admin")
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let subject = format!("{p}.registry.{id}.removed");
    assert!(reader.last_sequence_of(&subject).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(500)).await;

    let log = s.server.log();
    let violations: Vec<&str> = log.lines().filter(|l| l.contains("Violation")).collect();
    assert!(violations.is_empty(), "{violations:#?}");
    assert!(!log.contains("canary-pa55"));
    for stop in stops {
        stop.abort();
    }
    let _ = std::fs::remove_dir_all(&state);
}
